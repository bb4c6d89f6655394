"""pytest plugin (``-p mesh.testing``): every test session gets a real, fresh PostgreSQL database.

Before Django is configured, the plugin creates a database ``test_<service>_<pid>`` on the server
named by ``TEST_DATABASE_URL`` (a role that may create databases and roles) or, when that is unset,
on the embedded server under `.mesh/postgres`; bootstraps every schema and role from `mesh.toml`;
and points ``DATABASE_URL`` at it with the service's own role, so tests run with production's
permissions. The database is dropped when the session ends.

A service's ``tests/conftest.py`` re-exports :func:`django_db_setup` so pytest-django migrates that
existing database instead of creating its own.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mesh.bootstrap import bootstrap, drop_database, local_passwords, service_url
from mesh.fleet import POOLER_PORT
from mesh.local import embedded_postgres
from mesh.postgres import EmbeddedPostgres
from mesh.registry import Registry, Service, find_root, load_registry

__all__ = [
    "django_db_setup",
    "free_port_offset",
    "private_postgres",
    "shared_tmpdir",
    "test_admin_url",
    "tool_missing",
]

_state: dict[str, Any] = {}

# Offsets a test fleet runs on: above the default fleet's ports (8001 up, internal ports to 11xxx),
# and below the kernel's ephemeral range (32768 up), where any outgoing connection on the machine
# may take a port at any moment; that is how a fixed random offset collided before.
_FIRST_OFFSET = 4000
_EPHEMERAL_FLOOR = 32768
_offsets_given: set[int] = set()


def tool_missing(message: str) -> NoReturn:
    """A test's external tool is absent: skip on a laptop, fail under ``CI=true``.

    CI installs every tool (`.ci/run`), so a green CI run can never hide a check that did not run.
    """
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI=true: the CI run must install it")
    pytest.skip(message)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_offset(registry: Registry, extra_ports: Iterable[int] = ()) -> int:
    """A ``--port-offset`` under which every port the fleet binds is free now.

    Each call in a session gets another offset; the start is random, so that pytest sessions on one
    machine rarely try the same ranges.
    """
    ports = [POOLER_PORT, *extra_ports]
    for service in registry:
        ports += [service.port, service.app_port, service.metrics_port, service.sidecar_metrics_port]
    candidates = list(range(_FIRST_OFFSET, _EPHEMERAL_FLOOR - max(ports), 10))
    start = random.randrange(len(candidates))  # noqa: S311 - a port, not a secret
    for offset in candidates[start:] + candidates[:start]:
        if offset not in _offsets_given and all(_free(port + offset) for port in ports):
            _offsets_given.add(offset)
            return offset
    raise RuntimeError("no port offset leaves every port of the fleet free on 127.0.0.1")


def test_admin_url() -> str:
    """The superuser URL tests create databases with; starts the embedded server when needed."""
    if "admin_url" not in _state:
        url = os.environ.get("TEST_DATABASE_URL")
        if url:
            _state["admin_url"] = url
        else:
            server = embedded_postgres(find_root())
            _state["started_server"] = server if server.start() else None
            _state["admin_url"] = server.admin_url()
    url_: str = _state["admin_url"]
    return url_


def _service_for(settings_module: str, registry: Registry) -> Service:
    package = settings_module.split(".", 1)[0]
    if package in registry.services:
        return registry[package]
    # A library's test project is not in the fleet: give it a schema of its own.
    return Service(name=package, port=0, schema=package)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    # A wrapper runs before pytest-django's own hook, which imports the Django settings.
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE") or early_config.getini(
        "DJANGO_SETTINGS_MODULE"
    )
    if settings_module and "DATABASE_URL" not in os.environ:
        _prepare_database(str(settings_module), Path(str(early_config.rootpath)))
    os.environ.setdefault("MESH_LOCAL_DEV", "1")
    return (yield)


def _prepare_database(settings_module: str, rootpath: Path) -> None:
    registry = load_registry(find_root(rootpath))
    service = _service_for(settings_module, registry)
    fleet = list(registry)
    if service.name not in registry.services:
        fleet.append(service)
    admin = test_admin_url()
    database = f"test_{service.name}_{os.getpid()}"
    bootstrap(admin, database, fleet, local_passwords(fleet))
    _state["database"] = database
    _state["fleet"] = fleet
    os.environ["DATABASE_URL"] = service_url(admin, database, service.role)
    for owner in service.reads:
        os.environ[f"{owner.upper()}_READ_DATABASE_URL"] = service_url(admin, database, service.reader_role)


def pytest_unconfigure(config: pytest.Config) -> None:
    from django.db import connections

    database = _state.pop("database", None)
    if database:
        # Django may not be configured at all (repository-level suites).
        with contextlib.suppress(Exception):
            connections.close_all()
        drop_database(_state["admin_url"], database)
    server: EmbeddedPostgres | None = _state.pop("started_server", None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: Any) -> None:
    """Migrate the session's database (already created and bootstrapped) under the migration lock."""
    from django.core.management import call_command

    with django_db_blocker.unblock():
        call_command("migrate_locked", verbosity=0)


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, which the test may stop and start at will."""
    with shared_tmpdir("mesh-pg-") as home:
        server = EmbeddedPostgres(home)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def shared_tmpdir(prefix: str) -> Iterator[Path]:
    """A temporary directory that PostgreSQL's own unprivileged user may traverse; removed afterwards.

    Not under pytest's tmp_path: every pytest session on the host (a nested one included) resets
    that tree to mode 0700, which locks the server's user out of its data directory or binaries.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mesh_registry() -> Registry:
    """The fleet as `mesh.toml` declares it."""
    return load_registry(find_root())


@pytest.fixture(scope="session")
def admin_url() -> str:
    """Superuser URL of the test server (``TEST_DATABASE_URL`` or the embedded one)."""
    return test_admin_url()
