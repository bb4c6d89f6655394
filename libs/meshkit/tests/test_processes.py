"""meshkit under real processes: gunicorn with the shared config, and migrate_locked racing itself."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from mesh.bootstrap import bootstrap, drop_database, local_passwords, service_url
from mesh.postgres import EmbeddedPostgres, free_port
from mesh.processes import ManagedProcess, python_module, wait_for_http
from mesh.registry import Service

HERE = Path(__file__).parent
SERVICE = Service(name="meshkit_testapp", port=0, schema="meshkit_testapp")


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="meshkit_testapp.settings",
        PYTHONPATH=str(HERE),
        MESH_LOCAL_DEV="1",
        DATABASE_URL=database_url,
        **extra,
    )
    return env


def fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"meshkit_{uuid.uuid4().hex[:8]}"
    bootstrap(admin_url, name, [SERVICE], local_passwords([SERVICE]))
    return name, service_url(admin_url, name, SERVICE.role)


def migrate(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        python_module("django", "migrate_locked"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def gunicorn(admin_url: str, tmp_path: Path, **extra: str) -> Iterator[tuple[str, ManagedProcess]]:
    """The test app in a database of its own under gunicorn with the shared config, until the block ends."""
    _, url = fresh_database(admin_url)
    port = free_port()
    env = app_env(
        url,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **extra,
    )
    assert migrate(env).wait(120) == 0
    app = ManagedProcess(
        name="gunicorn",
        # No app named, as the images start it: the config serves the wsgi module next to the settings.
        argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn"),
        env=env,
        log_path=tmp_path / "gunicorn.log",
    )
    app.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", timeout=60, watch=[app])
        yield base, app
    finally:
        app.stop()


@pytest.fixture
def served_app(
    private_postgres: EmbeddedPostgres, tmp_path: Path
) -> Iterator[tuple[str, ManagedProcess, EmbeddedPostgres]]:
    settings = {"GUNICORN_WORKERS": "2", "READYZ_TIMEOUT": "2"}
    with gunicorn(private_postgres.admin_url(), tmp_path, **settings) as (base, app):
        yield base, app, private_postgres


def test_readyz_follows_the_database_while_livez_stays_up(served_app) -> None:
    base, app, postgres = served_app
    port = postgres.running_port()
    assert httpx.get(f"{base}/readyz").status_code == 200

    postgres.stop()
    # The probe's own bound: READYZ_TIMEOUT (2 s) plus slack for a loaded machine.
    down = httpx.get(f"{base}/readyz", timeout=10)
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert down.json()["checks"]["database:default"] != "ok"
    assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
    # A request that needs the database gets a retryable 503, not a 500 or a hung worker.
    failed = httpx.get(f"{base}/items/a", timeout=20)
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "5"

    postgres.start(port=port)
    wait_for_http(f"{base}/readyz", timeout=30, watch=[app])
    assert httpx.get(f"{base}/livez").status_code == 200
    assert httpx.get(f"{base}/items/a").json() == {"name": "a", "exists": False}


def test_access_log_is_json_with_the_request_id_and_skips_probes(served_app) -> None:
    base, app, _ = served_app
    httpx.get(f"{base}/items/widget", headers={"X-Request-ID": "trace-42"})
    httpx.get(f"{base}/livez")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in app.log_path.read_text().splitlines() if line.startswith("{")]
        access = [e for e in entries if e.get("logger") == "gunicorn.access"]
        if access:
            break
        time.sleep(0.2)
    assert [e["path"] for e in access] == ["/items/widget"]
    assert access[0]["request_id"] == "trace-42"
    assert access[0]["status"] == 200
    app_lines = [e for e in entries if e.get("message") == "looking up item"]
    assert app_lines, "the view's own log line is missing"
    assert app_lines[0]["request_id"] == "trace-42"
    assert app_lines[0]["item"] == "widget"


def _access_lines(app: ManagedProcess) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in app.log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "gunicorn.access"]


def test_access_lines_from_busy_threads_arrive_whole_and_once(
    private_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Lines from many threads at once, written in batches: every request one whole line, no more."""
    ids = [f"busy-{n}" for n in range(200)]
    settings = {"METRICS_BIND": "", "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4"}
    with gunicorn(private_postgres.admin_url(), tmp_path, **settings) as (base, app):

        def ask(request_ids: list[str]) -> None:
            with httpx.Client(timeout=30) as client:
                for request_id in request_ids:
                    answer = client.get(f"{base}/items/x", headers={"X-Request-ID": request_id})
                    assert answer.status_code == 200

        threads = [threading.Thread(target=ask, args=(ids[n::8],)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 10
        while len(_access_lines(app)) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a line written twice would arrive now
        logged = [line["request_id"] for line in _access_lines(app)]
    assert sorted(logged) == sorted(ids), app.tail()


def test_access_lines_still_queued_are_written_when_gunicorn_stops(
    private_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    admin, settings = private_postgres.admin_url(), {"METRICS_BIND": "", "GUNICORN_WORKERS": "1"}
    with gunicorn(admin, tmp_path, **settings) as (base, app), httpx.Client() as client:
        for n in range(20):
            client.get(f"{base}/items/x", headers={"X-Request-ID": f"last-{n}"})
    # Stopped at once: the lines were still queued for the next batch.
    logged = [line["request_id"] for line in _access_lines(app)]
    assert logged == [f"last-{n}" for n in range(20)], app.tail()


def test_two_migrate_locked_at_once_both_succeed_and_apply_once(admin_url: str) -> None:
    name, url = fresh_database(admin_url)
    try:
        env = app_env(url)
        first, second = migrate(env), migrate(env)
        outputs = [proc.communicate(timeout=180)[0] for proc in (first, second)]
        assert first.returncode == 0, outputs[0]
        assert second.returncode == 0, outputs[1]
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM meshkit_testapp_migrationrun")
                assert cursor.fetchone() == (1,)
                cursor.execute(
                    "SELECT count(*) FROM django_migrations"
                    " WHERE app = 'meshkit_testapp' AND name = '0001_initial'"
                )
                assert cursor.fetchone() == (1,)
                cursor.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'django_migrations'")
                assert cursor.fetchall() == [("meshkit_testapp",)]
        finally:
            conn.close()
    finally:
        drop_database(admin_url, name)


def test_gunicorn_keeps_a_connection_alive_for_the_next_request(served_app) -> None:
    """A proxy in front (the sidecar) reuses its connections; sync workers closed every one."""
    base, _, _ = served_app
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        sockets = []
        for _ in range(3):
            conn.request("GET", "/livez")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert not response.will_close, (
                f"gunicorn answered Connection: {response.getheader('Connection')}"
            )
            sockets.append(conn.sock)
        assert sockets[0] is not None
        assert sockets.count(sockets[0]) == 3, "every request used the same connection"
    finally:
        conn.close()


def test_each_master_gets_its_own_control_socket_in_tmp(served_app) -> None:
    # gunicorn 23+ would put it in $HOME/.gunicorn (read-only in a pod, shared under `make up`).
    _, app, _ = served_app
    log = app.log_path.read_text()
    assert f"Control socket listening at {tempfile.gettempdir()}/gunicorn-{app.pid}.ctl" in log
    assert "Control server error" not in log


def test_migrate_locked_refuses_a_transaction_pooler_and_changes_nothing(admin_url: str) -> None:
    name, url = fresh_database(admin_url)
    try:
        proc = migrate(app_env(url, DATABASE_POOLER="transaction"))
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode != 0
        assert "migrate_locked needs a session" in output
        assert "direct DATABASE_URL" in output
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'django_migrations'")
                assert cursor.fetchone() == (0,)
        finally:
            conn.close()
    finally:
        drop_database(admin_url, name)


def test_a_unix_socket_handed_over_outlives_every_master(
    private_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """`mesh up` holds the app's unix socket (the sidecar's upstream) across gunicorn generations: a
    master that stops leaves the socket's path, and the next one serves on it."""
    _, url = fresh_database(private_postgres.admin_url())
    path = tmp_path / "app.sock"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(str(path))
    held.listen(64)
    env = app_env(
        url,
        GUNICORN_BIND=f"fd://{held.fileno()}",
        METRICS_BIND="",
        GUNICORN_WORKERS="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    assert migrate(env).wait(120) == 0
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=60.0)  # waits in the queue
    try:
        for generation in range(2):
            app = ManagedProcess(
                name=f"gunicorn-{generation}",
                argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn"),
                env=env,
                log_path=tmp_path / f"gunicorn-{generation}.log",
                pass_fds=(held.fileno(),),
            )
            app.start()
            try:
                assert client.get("http://localhost/livez").status_code == 200, app.tail()
            finally:
                app.stop()
            assert path.is_socket(), f"generation {generation} removed the supervisor's socket path"
    finally:
        client.close()
        held.close()
