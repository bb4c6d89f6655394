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
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mesh.bootstrap import bootstrap, drop_database, local_passwords, service_url
from mesh.fleet import POOLER_PORT, Fleet
from mesh.local import embedded_postgres
from mesh.postgres import EmbeddedPostgres
from mesh.registry import Registry, Service, find_root, load_registry
from meshcontract import read_database_url_variable

__all__ = [
    "copy_worktree",
    "django_db_setup",
    "free_port_offset",
    "private_postgres",
    "read_until",
    "shared_tmpdir",
    "start_fleet",
    "stop_fleet",
    "test_admin_url",
    "tool_missing",
]

_state: dict[str, Any] = {}

# Offsets a test fleet runs on: above the default fleet's ports (8001 up, internal ports to 11xxx),
# and below the kernel's ephemeral range (32768 up), where any outgoing connection on the machine
# may take a port at any moment; that is how a fixed random offset collided before.
_FIRST_OFFSET = 4000
_EPHEMERAL_FLOOR = 32768
# Every port an offset given in this session covers: two fleets started before either binds would
# otherwise share a port (one's app metrics port 10001 + o is the other's sidecar metrics 11001 + o - 1000).
_ports_given: set[int] = set()


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
        moved = {port + offset for port in ports}
        if not moved & _ports_given and all(_free(port) for port in moved):
            _ports_given.update(moved)
            return offset
    raise RuntimeError("no port offset leaves every port of the fleet free on 127.0.0.1")


def start_fleet(
    registry: Registry,
    admin_url: str,
    run_dir: Path,
    *,
    database_prefix: str = "test_fleet",
    prepare: Callable[[Fleet], object] | None = None,
    **options: Any,
) -> Fleet:
    """A seeded fleet on free ports against a fresh database, then ``prepare(fleet)``; nothing is
    left running or behind when either fails. ``options`` are :class:`~mesh.fleet.Fleet`'s."""
    fleet = Fleet.on_free_ports(registry, admin_url, run_dir, database_prefix=database_prefix, **options)
    try:
        fleet.up(seed=True)
        if prepare is not None:
            prepare(fleet)
    except BaseException:
        stop_fleet(fleet)
        raise
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    """Stop every process of ``fleet`` and drop its database."""
    fleet.stop()
    drop_database(fleet.admin_url, fleet.database)


def copy_worktree(source: Path, target: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored), copied under ``target``:
    uncommitted work included, so a test on a copy tests what is on disk."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        path = source / relative
        if path.is_file():  # a file deleted in the working tree is still in the index
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)


def read_until(
    proc: subprocess.Popen[str], marker: str, timeout: float, seen: list[str] | None = None
) -> list[str]:
    """The lines ``proc`` prints (``mesh up``'s, say) up to the first holding ``marker``; each is also
    appended to ``seen``, whose whole text an early exit or a timeout reports."""
    seen = [] if seen is None else seen
    start = len(seen)
    deadline = time.monotonic() + timeout
    if proc.stdout is None:
        raise ValueError("read_until needs a process started with stdout=PIPE")
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("the process exited early:\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return seen[start:]
    raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(seen))


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
        os.environ[read_database_url_variable(owner)] = service_url(admin, database, service.reader_role)


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
