"""A frozen app is answered for: a request waiting on it gets a 504, the next ones a 503 at once, and
traffic flows again as soon as the app resumes. A slow app that still answers is waited for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshauth.settings import ENGINES
from meshauth_testkit import Upstream, free_port, wait_until


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """An app in a process of its own (a file server: every path answers), so it can be frozen."""
    port = free_port()
    (tmp_path / "index.html").write_text("hello")
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up)
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def test_a_frozen_app_gets_a_504_then_503s_at_once_until_it_resumes(
    app: tuple[subprocess.Popen[bytes], str], start_sidecar: object
) -> None:
    proc, url = app
    sidecar = start_sidecar(  # type: ignore[operator]
        MESHAUTH_SIDECAR_UPSTREAM=url,
        MESHAUTH_PUBLIC_PATHS="/",
        MESHAUTH_SIDECAR_STALL_TIMEOUT="1",
        MESHAUTH_HTTP_TIMEOUT="1",
    )
    with httpx.Client(base_url=sidecar.url, timeout=30) as http:
        assert http.get("/").status_code == 200
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            waited = http.get("/")
            assert waited.status_code == 504
            assert waited.json()["reason"] == "upstream_unavailable"
            # Stalled: refused without reaching the app, and so are the probes a kubelet sends.
            for path in ("/", "/readyz", "/livez"):
                refused = http.get(path)
                assert refused.status_code == 503
                assert refused.headers["Retry-After"] == "1"
        finally:
            os.kill(proc.pid, signal.SIGCONT)

        def serving() -> bool:
            return http.get("/").status_code == 200

        wait_until(serving, timeout=10)
    metrics = httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text
    assert 'meshauth_sidecar_upstream_errors_total{kind="stalled"}' in metrics
    assert "app answering again" in sidecar.log.read_text()


def test_haproxy_takes_a_frozen_app_out_until_it_resumes(
    app: tuple[subprocess.Popen[bytes], str], start_sidecar: object
) -> None:
    # The HAProxy engine asks /livez itself (every MESHAUTH_SIDECAR_STALL_TIMEOUT seconds, every second
    # after a miss): a request already waiting gets its 504 at the upstream timeout, not sooner.
    proc, url = app
    sidecar = start_sidecar(  # type: ignore[operator]
        MESHAUTH_SIDECAR_ENGINE="haproxy",
        MESHAUTH_SIDECAR_UPSTREAM=url,
        MESHAUTH_PUBLIC_PATHS="/",
        MESHAUTH_SIDECAR_STALL_TIMEOUT="1",
        MESHAUTH_HTTP_TIMEOUT="1",
        MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT="3",
    )
    with httpx.Client(base_url=sidecar.url, timeout=30) as http:
        assert http.get("/").status_code == 200
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            waited = http.get("/")
            assert (waited.status_code, waited.json()["reason"]) == (504, "upstream_unavailable")

            def refused_at_once(path: str) -> bool:
                try:
                    answer = http.get(path, timeout=0.5)
                except httpx.TimeoutException:  # still sent to the app
                    return False
                return answer.status_code == 503 and answer.headers["Retry-After"] == "5"

            # Taken out after two unanswered checks; then nothing reaches it, probes included.
            wait_until(lambda: refused_at_once("/"), timeout=10)
            assert all(refused_at_once(path) for path in ("/", "/readyz", "/livez"))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_until(lambda: http.get("/").status_code == 200, timeout=10)
    metrics = httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text
    assert 'meshauth_sidecar_upstream_errors_total{kind="timeout"} 1.0' in metrics
    assert 'meshauth_sidecar_upstream_errors_total{kind="connect"}' in metrics


@pytest.mark.parametrize("engine", ENGINES)
def test_a_slow_request_is_waited_for_while_the_app_answers_its_liveness_probe(
    upstream: Upstream, start_sidecar: object, engine: str
) -> None:
    # /slow takes 1.5 s, three times the stall timeout: the app answers /livez meanwhile.
    sidecar = start_sidecar(  # type: ignore[operator]
        MESHAUTH_PUBLIC_PATHS="/", MESHAUTH_SIDECAR_STALL_TIMEOUT="0.5", MESHAUTH_SIDECAR_ENGINE=engine
    )
    response = httpx.get(f"{sidecar.url}/slow", timeout=30)
    assert response.status_code == 200
    assert response.json()["path"] == "/slow"
    assert upstream.liveness_checks > 0
