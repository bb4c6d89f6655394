"""The pod's helpers from the sidecar image: the principal-secret writer and the in-container probe."""

from __future__ import annotations

import http.server
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshauth.sidecar.probe import check
from meshauth.sidecar.probe import main as probe_main
from meshauth.sidecar.secret import MIN_BYTES, ensure_principal_secret
from meshauth.sidecar.secret import main as secret_main


def test_secret_is_created_once_and_readable_only_by_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "meshauth" / "principal-secret"
    assert secret_main([str(path)]) == 0
    first = path.read_text()
    assert len(first) >= MIN_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    # run again (the pod's sandbox restarted): the sidecar and the app keep agreeing
    assert ensure_principal_secret(path) is False
    assert path.read_text() == first
    assert [p.name for p in path.parent.iterdir()] == ["principal-secret"], "no partial file left"


def test_a_short_secret_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "principal-secret"
    path.write_text("short")
    path.chmod(0o600)
    assert ensure_principal_secret(path) is True
    assert len(path.read_text()) >= MIN_BYTES


def test_secret_writer_usage_and_unwritable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert secret_main([]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert secret_main([str(blocker / "principal-secret")]) == 1
    assert "cannot write" in capsys.readouterr().err


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/livez" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_probe_passes_on_2xx_and_an_open_port(server: int) -> None:
    assert check(f"http://127.0.0.1:{server}/livez") is None
    assert check(f"tcp://127.0.0.1:{server}") is None
    assert probe_main([f"http://127.0.0.1:{server}/livez"]) == 0


def test_probe_fails_on_5xx_a_closed_port_and_a_bad_target(server: int) -> None:
    assert check(f"http://127.0.0.1:{server}/readyz") == f"http://127.0.0.1:{server}/readyz: HTTP 503"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert check(f"tcp://127.0.0.1:{closed}") is not None
    assert check("ftp://127.0.0.1/") is not None
    assert probe_main([f"http://127.0.0.1:{server}/readyz"]) == 1
    assert probe_main([]) == 2
