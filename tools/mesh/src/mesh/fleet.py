"""Run the fleet on one machine exactly as in a pod: gunicorn on loopback behind its auth sidecar.

Shared by `mesh up` (fixed ports from `mesh.toml`) and the end-to-end tests (free ports, a fresh
database), so what the tests prove is what a developer runs.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.bootstrap import bootstrap, local_passwords, service_url
from mesh.pooler import PgBouncer
from mesh.postgres import free_port
from mesh.processes import ManagedProcess, python_module, wait_for_http
from mesh.registry import Registry, Service
from meshcontract import JWKS_PATH, READYZ, callee_url_variable, read_database_url_variable, unix_http_url

__all__ = ["Fleet", "PortInUse", "ServicePorts"]

MODES = ("sidecar", "inprocess")
TRANSPORTS = ("unix", "tcp")
# PgBouncer's own port under `mesh up --pooler` (plus --port-offset).
POOLER_PORT = 6432


class PortInUse(Exception):
    """A port of the fleet is taken: another mesh (or program) is listening there."""

    def __init__(self, service: str, port: int) -> None:
        super().__init__(f"port {port} ({service}) is already in use")
        self.service = service
        self.port = port


def _listen(port: int, service: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # No SO_REUSEPORT: a second mesh on the same ports must fail here, not share the traffic.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(service, port) from None
        raise
    sock.listen(1024)
    return sock


def _listen_unix(path: Path) -> socket.socket:
    """A listening unix socket at ``path``; a socket file left there by a killed mesh is replaced (the
    run directory's lock keeps a live one from being there)."""
    if path.is_socket():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    return sock


@dataclass(frozen=True)
class ServicePorts:
    public: int
    app: int
    # Internal listeners, never behind the public port: the app's /metrics and admin, the sidecar's metrics.
    metrics: int
    sidecar_metrics: int


@dataclass
class Fleet:
    """The services of ``registry`` against ``database`` on the server behind ``admin_url``."""

    registry: Registry
    admin_url: str
    database: str
    run_dir: Path
    mode: str = "sidecar"
    workers: int = 2
    # Sidecar mode: how a sidecar reaches its gunicorn: "unix", a socket in the run directory, as in
    # a pod (cheaper per request: the README's Performance section), or "tcp", the port + 1000
    # (`mesh bench --upstream tcp` measures the difference).
    transport: str = "unix"
    # What serves each sidecar's port (MESHAUTH_SIDECAR_ENGINE): "python" or "haproxy".
    sidecar_engine: str = "python"
    fixed_ports: bool = True
    port_offset: int = 0
    only: tuple[str, ...] = ()
    # PgBouncer (transaction mode) between every service and PostgreSQL; migrations go direct.
    pooler: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[str, ServicePorts] = field(default_factory=dict)
    processes: dict[str, list[ManagedProcess]] = field(default_factory=dict)
    # The listening sockets, bound here and inherited by every generation of a service's
    # processes: a restart never refuses a connection, and a replacement takes over the queue.
    sockets: dict[str, dict[str, socket.socket]] = field(default_factory=dict)
    _principal_secrets: dict[str, str] = field(default_factory=dict)
    _socket_dir: str = ""
    pgbouncer: PgBouncer | None = None

    @classmethod
    def on_free_ports(
        cls, registry: Registry, admin_url: str, run_dir: Path, *, database_prefix: str, **options: Any
    ) -> Fleet:
        """A fleet beside any other (tests, dashboard previews): free ports and a database of its own,
        ``<database_prefix>_<random>``. ``options`` are the other fields."""
        return cls(
            registry=registry,
            admin_url=admin_url,
            database=f"{database_prefix}_{uuid.uuid4().hex[:8]}",
            run_dir=run_dir,
            fixed_ports=False,
            **options,
        )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        for service in self.services:
            if self.fixed_ports:
                self.ports[service.name] = ServicePorts(
                    service.port + self.port_offset,
                    service.app_port + self.port_offset,
                    service.metrics_port + self.port_offset,
                    service.sidecar_metrics_port + self.port_offset,
                )
            else:
                self.ports[service.name] = ServicePorts(free_port(), free_port(), free_port(), free_port())
            self._principal_secrets[service.name] = secrets.token_urlsafe(32)
        if self.pooler:
            port = POOLER_PORT + self.port_offset if self.fixed_ports else 0
            self.pgbouncer = PgBouncer(self.admin_url, self.run_dir / "pgbouncer", port=port)

    def listen(self) -> None:
        """Bind every port now; raises :class:`PortInUse` (and binds none) when one is taken."""
        try:
            for service in self.services:
                if service.name in self.sockets:
                    continue
                ports = self.ports[service.name]
                bound = {"public": _listen(ports.public, service.name)}
                self.sockets[service.name] = bound
                # The internal port too: a new generation serves it while the old one drains.
                bound["metrics"] = _listen(ports.metrics, service.name)
                if self.mode == "sidecar":
                    bound["app"] = (
                        _listen_unix(self.socket_path(service))
                        if self.transport == "unix"
                        else _listen(ports.app, service.name)
                    )
                    bound["sidecar_metrics"] = _listen(ports.sidecar_metrics, service.name)
        except PortInUse:
            self.close_sockets()
            raise

    def close_sockets(self, names: Iterable[str] | None = None) -> None:
        for name in list(names) if names is not None else list(self.sockets):
            for sock in self.sockets.pop(name, {}).values():
                path = sock.getsockname() if sock.family == socket.AF_UNIX else ""
                sock.close()
                if path:
                    Path(path).unlink(missing_ok=True)

    @property
    def services(self) -> list[Service]:
        chosen = [s for s in self.registry if not self.only or s.name in self.only]
        # identity first: every other service fetches its JWKS at start.
        return sorted(chosen, key=lambda s: (s.name != "identity", s.name))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name].public}"

    def metrics_url(self, name: str, endpoint: str = "app") -> str:
        """Where Prometheus scrapes ``name``: its app's /metrics, or (``"sidecar"``) its sidecar's."""
        ports = self.ports[name]
        if endpoint == "sidecar":
            return f"http://127.0.0.1:{ports.sidecar_metrics}/metrics/sidecar"
        return f"http://127.0.0.1:{ports.metrics}/metrics"

    # -- environment ---------------------------------------------------------------------------

    def database_url(self, role: str, *, direct: bool = False) -> str:
        """A role's URL: through PgBouncer when the fleet has one (unless ``direct``)."""
        url = service_url(self.admin_url, self.database, role)
        return url if direct or self.pgbouncer is None else self.pgbouncer.url(url)

    def env(self, service: Service, *, direct: bool = False) -> dict[str, str]:
        """The environment a service's processes get: the runtime contract, filled in for a laptop.

        ``direct`` bypasses the pooler (migrations: their advisory lock needs a session).
        """
        identity = self.url("identity") if "identity" in self.ports else ""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MESHAUTH_"))},
            "DJANGO_SETTINGS_MODULE": service.settings_module,
            "MESH_LOCAL_DEV": "1",
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url(service.role, direct=direct),
            "MESHAUTH_MODE": self.mode,
            "MESHAUTH_ISSUER": identity,
            # Its own name (service tokens) and the mesh-wide audience of end users' tokens.
            "MESHAUTH_AUDIENCE": f"{service.name},mesh",
            "MESHAUTH_JWKS_URL": f"{identity}{JWKS_PATH}",
            "MESHAUTH_IDENTITY_URL": identity,
            "MESHAUTH_PRINCIPAL_SECRET": self._principal_secrets[service.name],
            "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / service.name / "metrics"),
            "GUNICORN_WORKERS": str(self.workers),
            "GUNICORN_PROC_NAME": f"mesh-{service.name}",
            "METRICS_BIND": f"127.0.0.1:{self.ports[service.name].metrics}",
        }
        if service.name == "identity" and self.mode == "sidecar":
            # identity's sidecar reads the keys from the app beside it, not through itself.
            env["MESHAUTH_JWKS_URL"] = self.app_url(service, JWKS_PATH)
        client = self.client_credentials().get(service.name)
        if client:
            env["MESHAUTH_CLIENT_ID"] = service.name
            env["MESHAUTH_CLIENT_SECRET"] = client["secret"]
            # Its workers share their service tokens: one (re)started while identity is down still calls.
            env["MESHAUTH_TOKEN_CACHE_DIR"] = str(self.run_dir / service.name / "tokens")
        if service.name == "identity":
            env["MESH_SERVICE_CLIENTS"] = json.dumps(self.client_credentials())
        for callee in service.calls:
            if callee in self.ports:
                env[callee_url_variable(callee)] = self.url(callee)
        for owner in service.reads:
            env[read_database_url_variable(owner)] = self.database_url(service.reader_role, direct=direct)
        if self.pgbouncer is not None and not direct:
            env["DATABASE_POOLER"] = self.pgbouncer.pool_mode
        env.update(self.extra_env)
        env.update(self.service_env.get(service.name, {}))
        return env

    def client_credentials(self) -> dict[str, dict[str, Any]]:
        """A service client for every service that calls others (identity's seed creates them)."""
        return {
            service.name: {
                "audiences": sorted({*service.calls, "identity"}),
                "secret": f"{service.name}-local-client-secret",
            }
            for service in self.services
            if service.calls
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def bootstrap(self) -> None:
        bootstrap(self.admin_url, self.database, self.registry, local_passwords(self.registry))

    def manage(
        self, service: Service, *args: str, check: bool = True, direct: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a management command of ``service`` with its environment (``direct``: no pooler)."""
        # A one-off command keeps its metrics in memory: the gunicorn metrics directory may not exist
        # yet (gunicorn creates it), and a dead command's files would be summed into /metrics.
        env = {k: v for k, v in self.env(service, direct=direct).items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "django", *args],
            env=env,
            cwd=self.registry.service_dir(service.name),
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def migrate(self, service: Service) -> None:
        # Direct, as the chart's migration Job: a transaction pooler cannot hold the advisory lock.
        result = self.manage(service, "migrate_locked", check=False, direct=True)
        if result.returncode != 0:
            raise RuntimeError(f"{service.name}: migrate_locked failed:\n{result.stdout}{result.stderr}")

    def app_process(self, service: Service) -> ManagedProcess:
        """A new (not started) gunicorn process for ``service``, on the socket the fleet holds."""
        self.listen()
        env = self.env(service)
        held = self.sockets[service.name]
        sock = held["app" if self.mode == "sidecar" else "public"]
        bind, fds = f"fd://{sock.fileno()}", (sock.fileno(), held["metrics"].fileno())
        # gunicorn binds no address once it is given a descriptor: both listeners are inherited (and
        # meshkit's config keeps a stopping master from unlinking the unix socket's path).
        env["METRICS_BIND"] = f"fd://{held['metrics'].fileno()}"
        if self.mode == "sidecar":
            # As in the charts: the sidecar's access line is the service's (unless asked for both).
            env.setdefault("GUNICORN_ACCESS_LOG", "false")
        return ManagedProcess(
            name=f"{service.name}-app",
            argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn", f"{service.name}.wsgi"),
            env={**env, "GUNICORN_BIND": bind},
            log_path=self.run_dir / service.name / "app.log",
            cwd=self.registry.service_dir(service.name),
            pass_fds=fds,
        )

    def sidecar_process(self, service: Service) -> ManagedProcess:
        """A new (not started) sidecar for ``service``, on the public socket the fleet holds."""
        self.listen()
        sock = self.sockets[service.name]["public"]
        metrics = self.sockets[service.name]["sidecar_metrics"]
        # As in the pod, the sidecar has no PROMETHEUS_MULTIPROC_DIR: with it, prometheus_client
        # would write the sidecar's series into the app's directory and /metrics would repeat them.
        env = {k: v for k, v in self.env(service).items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        return ManagedProcess(
            name=f"{service.name}-sidecar",
            argv=python_module("meshauth.sidecar"),
            env={
                **env,
                "MESHAUTH_SIDECAR_LISTEN": f"fd://{sock.fileno()}",
                "MESHAUTH_SIDECAR_UPSTREAM": self.upstream(service),
                "MESHAUTH_SIDECAR_METRICS_LISTEN": f"fd://{metrics.fileno()}",
                "MESHAUTH_SIDECAR_ENGINE": self.sidecar_engine,
            },
            log_path=self.run_dir / service.name / "sidecar.log",
            pass_fds=(sock.fileno(), metrics.fileno()),
        )

    def start(self, service: Service) -> list[ManagedProcess]:
        started = [self.app_process(service)]
        if self.mode == "sidecar":
            started.append(self.sidecar_process(service))
        for proc in started:
            proc.start()
        self.processes[service.name] = started
        return started

    def upstream(self, service: Service) -> str:
        """Where ``service``'s sidecar sends requests: its gunicorn's unix socket or TCP port."""
        if self.transport == "unix":
            return f"unix:{self.socket_path(service)}"
        return f"http://127.0.0.1:{self.ports[service.name].app}"

    def app_url(self, service: Service, path: str) -> str:
        """``path`` of ``service``'s gunicorn behind its sidecar (http+unix:// on a socket)."""
        if self.transport == "unix":
            return unix_http_url(str(self.socket_path(service)), path)
        return f"http://127.0.0.1:{self.ports[service.name].app}{path}"

    def socket_path(self, service: Service) -> Path:
        """Where ``service``'s gunicorn listens for its sidecar (a path short enough for AF_UNIX)."""
        path = self.run_dir / service.name / "app.sock"
        if len(str(path)) > 100:  # sun_path holds 108 bytes
            if not self._socket_dir:
                self._socket_dir = tempfile.mkdtemp(prefix="mesh-sock-")
            path = Path(self._socket_dir) / f"{service.name}.sock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def wait_ready(self, service: Service, timeout: float = 60.0) -> None:
        url = f"{self.url(service.name)}{READYZ}"
        wait_for_http(url, timeout=timeout, watch=self.processes[service.name])

    def up(self, progress: Callable[[str], None] = lambda _: None, seed: bool = False) -> None:
        """Bootstrap, migrate, (seed,) start and wait for every service, reporting each step."""
        progress(f"bootstrapping database {self.database} (schemas, roles, grants)")
        self.bootstrap()
        if self.pgbouncer is not None:
            pooler = self.pgbouncer
            progress(f"starting PgBouncer ({pooler.pool_mode} pooling) on 127.0.0.1:{pooler.port}")
            self.pgbouncer.start()
        for service in self.services:
            progress(f"{service.name}: migrate_locked" + (" (direct, not pooled)" if self.pgbouncer else ""))
            self.migrate(service)
        for service in self.services:
            progress(
                f"{service.name}: starting gunicorn ({self.workers} workers)"
                + (" behind its auth sidecar" if self.mode == "sidecar" else "")
            )
            self.start(service)
            self.wait_ready(service)
            progress(f"{service.name}: ready on {self.url(service.name)}")
            if seed:
                self.seed(service, progress)

    def seed(self, service: Service, progress: Callable[[str], None]) -> None:
        """Run the service's idempotent ``seed_demo`` command when it has one."""
        result = self.manage(service, "seed_demo", check=False)
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                progress(f"{service.name}: {line}")
        elif "Unknown command" not in result.stderr:
            raise RuntimeError(f"{service.name}: seed_demo failed:\n{result.stdout}{result.stderr}")

    def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop services in reverse start order (sidecar before its app)."""
        chosen = list(names) if names is not None else list(self.processes)
        for name in reversed(chosen):
            for proc in reversed(self.processes.get(name, [])):
                proc.stop()
            self.processes.pop(name, None)
        # A stopped service's ports close: connecting is refused, as with no pod behind a Service.
        self.close_sockets(chosen if names is not None else None)
        if names is None and self.pgbouncer is not None:
            self.pgbouncer.stop()
