"""gunicorn's shared config: the first workers' recycling points are spread over one period."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from meshkit import gunicorn as config


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_the_first_workers_recycle_at_spread_points_and_replacements_keep_the_full_limit(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "max_requests", 1000)
    monkeypatch.setattr(config, "max_requests_jitter", 0)
    server = SimpleNamespace(num_workers=workers)
    first = [SimpleNamespace(age=age, max_requests=1000) for age in range(1, workers + 1)]
    for worker in first:
        config.post_fork(server, worker)
    limits = [worker.max_requests for worker in first]
    # 1/N, 2/N … N/N of the limit: one recycling every 1000/N requests, never all at once.
    assert limits == [1000 * age // workers for age in range(1, workers + 1)]
    replacement = SimpleNamespace(age=workers + 1, max_requests=1042)
    config.post_fork(server, replacement)
    assert replacement.max_requests == 1042  # gunicorn's own limit and jitter


def test_recycling_turned_off_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "max_requests", 0)
    worker = SimpleNamespace(age=1, max_requests=2**63 - 1)
    config.post_fork(SimpleNamespace(num_workers=2), worker)
    assert worker.max_requests == 2**63 - 1


@pytest.fixture
def reload_config() -> Iterator[None]:
    """Lets a test re-read the config under its own environment; the module is re-read afterwards."""
    yield
    importlib.reload(config)


@pytest.mark.parametrize(
    ("settings", "app"),
    [("identity.settings", "identity.wsgi"), ("shop.conf.settings", "shop.conf.wsgi"), (None, None)],
)
def test_the_app_is_the_wsgi_module_next_to_the_settings(
    settings: str | None, app: str | None, monkeypatch: pytest.MonkeyPatch, reload_config: None
) -> None:
    # The images start `gunicorn --config python:meshkit.gunicorn` with no app: one entry point for
    # every service. Without settings, gunicorn keeps asking for the app on its command line.
    if settings is None:
        monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    else:
        monkeypatch.setenv("DJANGO_SETTINGS_MODULE", settings)
    assert importlib.reload(config).wsgi_app == app


def test_control_sockets_of_masters_that_are_gone_are_removed(tmp_path: Path) -> None:
    """A SIGKILLed master leaves gunicorn-<pid>.ctl behind; the next master to start deletes it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"gunicorn-{gone.pid}.ctl"
    alive = tmp_path / f"gunicorn-{os.getpid()}.ctl"
    other = tmp_path / "gunicorn-notapid.ctl"
    for path in (stale, alive, other):
        path.touch()
    assert config.remove_stale_control_sockets(tmp_path) == [stale]
    assert not stale.exists()
    assert alive.exists(), "a running master's socket stays"
    assert other.exists(), "a file that names no pid stays"


@pytest.mark.parametrize(("value", "accesslog"), [(None, "-"), ("true", "-"), ("false", None)])
def test_the_access_log_can_be_left_to_the_sidecar(
    value: str | None, accesslog: str | None, monkeypatch: pytest.MonkeyPatch, reload_config: None
) -> None:
    # Behind the auth sidecar (the charts, `make up`), the sidecar's line is the access log.
    if value is None:
        monkeypatch.delenv("GUNICORN_ACCESS_LOG", raising=False)
    else:
        monkeypatch.setenv("GUNICORN_ACCESS_LOG", value)
    assert importlib.reload(config).accesslog == accesslog


class _Recording:
    """The worker's side of a socket pair, noting each ``sendall`` gunicorn makes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _respond(method: str, headers: list[tuple[str, str]], pieces: list[bytes]) -> tuple[list[bytes], bytes]:
    """One request through gunicorn's parser and the config's response class: its writes, and what
    the client received."""
    client, worker = socket.socketpair()
    with client, worker:
        client.sendall(f"{method} /items HTTP/1.1\r\nHost: app\r\n\r\n".encode())
        request = next(iter(RequestParser(Config(), worker, ("127.0.0.1", 9))))
        recording = _Recording(worker)
        response, _ = wsgi.create(request, recording, ("127.0.0.1", 9), ("127.0.0.1", 80), Config())
        response.start_response("200 OK", headers)
        for piece in pieces:
            response.write(piece)
        response.close()
        worker.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: client.recv(65536), b""))
    return recording.sent, received


def test_a_response_leaves_in_one_write_with_its_head() -> None:
    # Two writes per answer would be two wake-ups and reads of the sidecar's loop for one answer.
    assert wsgi.Response is config.OneWriteResponse
    sent, received = _respond("GET", [("Content-Type", "text/plain"), ("Content-Length", "5")], [b"hello"])
    assert len(sent) == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\nhello")
    assert b"Content-Length: 5\r\n" in received


def test_later_pieces_chunking_and_bodiless_answers_are_gunicorn_s() -> None:
    sent, received = _respond("GET", [("Content-Type", "text/plain")], [b"hel", b"lo"])
    # The head with the first chunk, the second chunk, the last (empty) chunk at close.
    assert len(sent) == 3
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent[0].endswith(b"\r\n\r\n3\r\nhel\r\n")
    assert sent[1:] == [b"2\r\nlo\r\n", b"0\r\n\r\n"]
    assert b"Transfer-Encoding: chunked\r\n" in received
    sent, received = _respond("HEAD", [("Content-Length", "5")], [b"hello"])
    assert len(sent) == 1
    assert received.endswith(b"Content-Length: 5\r\n\r\n"), "a HEAD answer has its head only"


def test_access_lines_leave_in_batches_soon_after_they_are_added() -> None:
    writes: list[str] = []
    written = threading.Event()

    def write(text: str) -> None:
        writes.append(text)
        written.set()

    batch = config.LineBatch(write, delay=0.05)
    threads = [
        threading.Thread(target=lambda n=n: [batch.add(f"{n}-{i}\n") for i in range(100)]) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Nobody flushes: the batch's own thread writes them, within its delay.
    assert written.wait(5), "no line was written"
    deadline = time.monotonic() + 5
    while sum(text.count("\n") for text in writes) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = "".join(writes).splitlines()
    assert sorted(lines) == sorted(f"{n}-{i}" for n in range(4) for i in range(100))
    assert len(writes) < 40, f"{len(writes)} writes for 400 lines"


def test_a_flush_writes_what_is_queued_at_once() -> None:
    writes: list[str] = []
    batch = config.LineBatch(writes.append, delay=60)
    batch.add("one\n")
    batch.add("two\n")
    batch.flush()
    assert writes == ["one\ntwo\n"]
    batch.flush()
    assert writes == ["one\ntwo\n"]


def test_a_stalled_stdout_holds_requests_back_instead_of_queueing_without_bound() -> None:
    release = threading.Event()
    writes: list[str] = []

    def stalled(text: str) -> None:
        release.wait(30)  # the container runtime stopped reading the pipe
        writes.append(text)

    batch = config.LineBatch(stalled, delay=0.01, limit=50)
    adder = threading.Thread(target=lambda: [batch.add(f"{n}\n") for n in range(200)])
    adder.start()
    adder.join(1)
    assert adder.is_alive(), "200 lines were queued while nothing could be written"
    release.set()
    adder.join(10)
    batch.flush()
    assert sorted("".join(writes).splitlines(), key=int) == [str(n) for n in range(200)]
