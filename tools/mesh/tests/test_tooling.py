"""The tools tests and `make bench` need, installed by the project from an empty cache (mesh.tooling),
and the Python load generator `make bench` falls back to without wrk (mesh.loadgen)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mesh import loadgen, tooling
from mesh.testing import tool_missing


@pytest.fixture
def empty_uv_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty-uv-cache"
    cache.mkdir()
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    monkeypatch.delenv("UV_OFFLINE", raising=False)
    return cache


def test_checkov_installs_pinned_from_an_empty_cache(
    tmp_path: Path, empty_uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkov = tooling.ensure_checkov(tmp_path)
    assert checkov == tmp_path / ".mesh" / "tools" / "checkov" / "bin" / "checkov"
    version = subprocess.run([checkov, "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert version.stdout.strip() == tooling.checkov_version()
    assert any(empty_uv_cache.iterdir()), "the install must have come from the index into this (empty) cache"
    # Installed once: a second call needs neither uv nor the network.
    monkeypatch.setenv("UV", str(tmp_path / "no-uv-here"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tooling.ensure_checkov(tmp_path) == checkov


def test_a_checkov_install_without_the_index_says_what_to_do(
    tmp_path: Path, empty_uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: no network
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(tooling.ToolError, match=r"installing checkov \S+ failed .*is PyPI reachable\?"):
        tooling.ensure_checkov(tmp_path)
    assert not (tmp_path / ".mesh" / "tools" / "checkov" / "bin" / "checkov").exists()


def test_the_pins_are_hashed_and_name_the_checkov_the_charts_run() -> None:
    pins = (tooling.PINS / "checkov.txt").read_text()
    assert tooling.checkov_version().count(".") == 2
    requirements = [line for line in pins.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(requirements) > 50
    assert all("==" in line for line in requirements), "every requirement pinned exactly"
    assert pins.count("--hash=sha256:") >= len(requirements)


def test_wrk_is_found_on_path() -> None:
    if shutil.which("wrk") is None:
        tool_missing("wrk (Debian package wrk; .ci/run installs it)")
    assert tooling.ensure_wrk() == shutil.which("wrk")


def test_without_wrk_or_root_bench_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tooling.os, "geteuid", lambda: 1000)
    assert tooling.ensure_wrk() is None
    from mesh import bench

    assert bench.load_generator() is loadgen.measure


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects
    status = 200

    def do_GET(self) -> None:
        body = self.headers.get("Authorization", "anonymous").encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(status: int) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whoami"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ok_server() -> Iterator[str]:
    yield from _serve(200)


@pytest.fixture
def failing_server() -> Iterator[str]:
    yield from _serve(500)


def test_the_load_generator_measures_rate_and_latency(ok_server: str) -> None:
    rps, p50, p99 = loadgen.measure(ok_server, "a-token", seconds=1, connections=4)
    assert rps > 50
    assert 0 < p50 <= p99


def test_the_load_generator_fails_on_error_answers(failing_server: str) -> None:
    with pytest.raises(RuntimeError, match="answered 500 under load"):
        loadgen.measure(failing_server, None, seconds=1, connections=2)
