"""Request bodies: read whole by the sidecar before the app is asked, within a size cap and a deadline."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from conftest import SidecarProcess
from meshauth_testkit import RawResponse, Upstream


def metric(sidecar: SidecarProcess, name: str) -> float:
    text = httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class SlowClient:
    """A client that announces a body and sends it one byte at a time (the slowloris of bodies)."""

    def __init__(self, port: int, length: int = 1000, interval: float = 0.5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            (
                "POST /api/v1/auth/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
        )
        self.interval = interval
        self.stopped = threading.Event()
        self.answer = b""
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                self.sock.sendall(b" ")
        except OSError:  # the sidecar gave up on us and closed
            pass

    def response(self) -> RawResponse:
        data = b""
        try:
            while chunk := self.sock.recv(65_536):
                data += chunk
        except OSError:
            pass
        return RawResponse(data)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(5)


def slow_clients(port: int, count: int) -> Iterator[SlowClient]:
    return (SlowClient(port) for _ in range(count))


def test_slow_bodies_never_reach_the_app_and_time_out_as_408(start_sidecar: Any, upstream: Upstream) -> None:
    sidecar = start_sidecar(MESHAUTH_SIDECAR_BODY_TIMEOUT="3")
    clients = list(slow_clients(sidecar.port, 20))
    try:
        time.sleep(1)
        # While twenty bodies trickle in, the app has seen none of them, and other requests pass.
        assert upstream.hits == 0
        for _ in range(5):
            assert httpx.get(f"{sidecar.url}/livez", timeout=5).status_code == 200
        assert upstream.hits == 5
        answers = [client.response() for client in clients]
    finally:
        for client in clients:
            client.close()
    assert [answer.status for answer in answers] == [408] * 20
    assert {answer.json()["reason"] for answer in answers} == {"body_timeout"}
    assert upstream.hits == 5
    assert metric(sidecar, 'meshauth_sidecar_rejected_requests_total{reason="body_timeout"}') == 20


def test_a_complete_body_is_forwarded_with_its_length(sidecar: SidecarProcess, upstream: Upstream) -> None:
    def chunks() -> Iterator[bytes]:
        for index in range(100):
            yield bytes([index]) * 10_000

    body = b"".join(chunks())
    response = httpx.post(f"{sidecar.url}/api/v1/orders", content=chunks())  # chunked
    assert response.status_code == 200
    assert response.json()["body_length"] == len(body)
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    received = dict(upstream.received[-1]["headers"])
    assert received["Content-Length"] == str(len(body))  # buffered: the app gets a plain body
    assert "Transfer-Encoding" not in received


def test_an_oversized_chunked_body_is_413_not_app_down(sidecar: SidecarProcess, upstream: Upstream) -> None:
    # 13 MB streamed without a Content-Length, over the default 10 MB cap: the size is the problem,
    # not the app, so no 503, no Retry-After, no upstream error for an alert to fire on.
    def chunks() -> Iterator[bytes]:
        for _ in range(13 * 16):
            yield b"z" * 65_536

    response = httpx.post(f"{sidecar.url}/api/v1/orders", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"
    assert "Retry-After" not in response.headers
    assert upstream.hits == 0
    assert metric(sidecar, "meshauth_sidecar_upstream_errors_total") == 0
    assert metric(sidecar, 'meshauth_sidecar_rejected_requests_total{reason="body_too_large"}') == 1
    assert httpx.post(f"{sidecar.url}/api/v1/orders", content=b"{}").status_code == 200


def test_expect_100_continue_is_answered_by_the_sidecar(sidecar: SidecarProcess, upstream: Upstream) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        assert upstream.hits == 0  # asked before the body was sent
        sock.sendall(b"hello")
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    response = RawResponse(data)
    assert response.status == 200
    assert response.json()["body_length"] == 5
    assert "Expect" not in dict(response.json()["headers"])


def test_a_body_that_ends_early_never_reaches_the_app(sidecar: SidecarProcess, upstream: Upstream) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65_536)
    time.sleep(0.3)
    assert upstream.hits == 0
    assert "Traceback" not in sidecar.log.read_text()
