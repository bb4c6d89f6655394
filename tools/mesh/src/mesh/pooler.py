"""PgBouncer in transaction mode between the services and PostgreSQL (`mesh up --pooler`, tests).

It is the Debian package's real binary (`.ci/run` installs it), listening on 127.0.0.1 only. Clients
authenticate with SCRAM: PgBouncer looks each role's SCRAM secret up with ``auth_query`` (as the
server's superuser, the only entry of its ``auth_file`` besides its console's user), then logs in to
PostgreSQL with that same secret (SCRAM pass-through), so no service password is written anywhere.
k8s/pgbouncer does the same in a cluster. Any database of the server is reachable through it (a
``*`` entry), so tests' fresh databases need no new configuration.

Migrations do not go through it: ``migrate_locked`` holds a session advisory lock, which a
transaction pooler cannot keep (the lock would stay on whichever server connection ran it).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2

from mesh.postgres import _run_as, free_port
from mesh.processes import ManagedProcess

__all__ = ["ADMIN_USER", "PgBouncer", "pgbouncer_binary", "pooled_url"]

ADMIN_USER = "pgbouncer"
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> str | None:
    """The PgBouncer executable, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in _CANDIDATES if os.access(path, os.X_OK)), None)


def pooled_url(url: str, port: int, host: str = "127.0.0.1") -> str:
    """``url`` (a service's direct URL) with its host and port replaced by the pooler's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """One PgBouncer for the server behind ``admin_url``; ``start`` writes its files under ``run_dir``."""

    admin_url: str
    run_dir: Path
    port: int = 0
    pool_mode: str = "transaction"
    pool_size: int = 10
    max_client_conn: int = 400
    process: ManagedProcess | None = field(default=None, repr=False)
    _admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def config_path(self) -> Path:
        return self.run_dir / "pgbouncer.ini"

    @property
    def auth_file(self) -> Path:
        return self.run_dir / "userlist.txt"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "pgbouncer.log"

    def url(self, direct_url: str) -> str:
        """The pooled form of a service's direct URL."""
        return pooled_url(direct_url, self.port)

    def write_config(self) -> None:
        """Write ``pgbouncer.ini`` and its ``auth_file`` (the lookup role and the console's user)."""
        server = urlsplit(self.admin_url)
        lookup = unquote(server.username or "postgres")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{_quote(lookup)} {_quote(unquote(server.password or ''))}",
            f"{_quote(ADMIN_USER)} {_quote(self._admin_password)}",
        ]
        self.auth_file.write_text("\n".join(lines) + "\n")
        self.auth_file.chmod(0o600)
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            # No Unix socket: several meshes (and tests) share /tmp.
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.auth_file),
            # Each login looks the role's current SCRAM secret up: a re-run bootstrap (every test
            # session runs one) re-salts the secrets, and a copied secret would go stale.
            "auth_user": lookup,
            "auth_query": "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
            "admin_users": ADMIN_USER,
            "stats_users": ADMIN_USER,
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            # A client waiting for a server connection gives up instead of hanging its request.
            "query_wait_timeout": "30",
            # Server connections go back clean: nothing one client SET leaks to the next.
            "server_reset_query": "DISCARD ALL",
            "server_reset_query_always": "0",
            "ignore_startup_parameters": "extra_float_digits",
            "logfile": "",
            "pidfile": "",
        }
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it drops to the embedded server's user (created here
            # when the server is not the embedded one).
            _run_as()
            settings["user"] = "pgserver"
        host = server.hostname or "127.0.0.1"
        text = ["[databases]", f"* = host={host} port={server.port or 5432}", "", "[pgbouncer]"]
        text += [f"{key} = {value}" for key, value in settings.items()]
        self.config_path.write_text("\n".join(text) + "\n")
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("pgserver")
            for path in (self.config_path, self.auth_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, env: dict[str, str] | None = None) -> None:
        """Write the configuration and start PgBouncer; return once it accepts connections."""
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self.write_config()
        self.process = ManagedProcess(
            name="pgbouncer",
            argv=[binary, str(self.config_path)],
            env=env or dict(os.environ),
            log_path=self.log_path,
        )
        self.process.start()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and not self.process.alive():
                raise RuntimeError(f"pgbouncer exited while starting:\n{self.process.tail()}")
            try:
                self.show("VERSION")
                return
            except psycopg2.Error as exc:
                last = str(exc).strip()
            time.sleep(0.1)
        raise TimeoutError(f"pgbouncer on 127.0.0.1:{self.port} not ready in {timeout:.0f} s ({last})")

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on PgBouncer's admin console (POOLS, STATS, CLIENTS, ...), as rows."""
        return self.console(f"SHOW {what}")

    def console(self, command: str) -> list[dict[str, Any]]:
        """Run one admin console command (``SHOW …``, ``RECONNECT``, ``PAUSE``, …); rows if any."""
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname="pgbouncer",
            user=ADMIN_USER,
            password=self._admin_password,
            connect_timeout=2,
        )
        conn.autocommit = True  # the console accepts no transactions
        try:
            with conn.cursor() as cursor:
                cursor.execute(command)
                if cursor.description is None:
                    return []
                columns = [column.name for column in cursor.description]
                return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
