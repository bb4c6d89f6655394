"""The sidecar's own HTTP/1.1 server, seen from raw sockets: order, framing, and how connections end."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import SidecarProcess
from meshauth_testkit import Upstream


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65_536):
        chunks.append(chunk)
    return b"".join(chunks)


def _answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a stream of answers framed by Content-Length."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        answers.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        data = rest[length:]
    return answers


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    sidecar: SidecarProcess, upstream: Upstream
) -> None:
    paths = ["/slow/first", "/second", "/third"]  # the first is the slowest: order is not speed
    payload = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
    payload += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(payload)
        answers = _answers(_read_until_closed(sock))
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert [json.loads(body)["path"] for _, _, body in answers] == [*paths, "/last"]
    assert answers[-1][1]["connection"] == "close"


def test_an_http_1_0_client_gets_its_answer_and_a_closed_connection(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/orders HTTP/1.0\r\n\r\n")
        (status, headers, body), *rest = _answers(_read_until_closed(sock))
    assert (status, rest) == (200, [])
    assert json.loads(body)["path"] == "/api/v1/orders"
    assert headers["connection"] == "close"


def test_http_1_0_keep_alive_is_honoured(sidecar: SidecarProcess) -> None:
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.5)
        sock.sendall(b"GET /two HTTP/1.0\r\n\r\n")
        answers = _answers(_read_until_closed(sock))
    assert [json.loads(body)["path"] for _, _, body in answers] == ["/one", "/two"]
    assert answers[0][1]["connection"] == "keep-alive"


@pytest.mark.parametrize(
    "head",
    [
        # Both framings: which one a proxy and its app each believe is how requests are smuggled.
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n",
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n",
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n",
    ],
    ids=["length-chunked", "chunked-length", "two-lengths", "chunked-not-last", "space-before-colon"],
)
def test_ambiguous_framing_is_refused_and_reaches_nobody(
    sidecar: SidecarProcess, upstream: Upstream, head: str
) -> None:
    hits = upstream.hits
    smuggled = b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + smuggled)
        answers = _answers(_read_until_closed(sock))
    assert [status for status, _, _ in answers] == [400], answers
    assert json.loads(answers[0][2])["reason"] == "malformed_request"
    assert answers[0][1]["connection"] == "close"
    assert upstream.hits == hits  # neither the request nor the one hidden in its body


def test_a_client_that_sends_its_whole_body_first_still_reads_the_refusal(
    sidecar: SidecarProcess, upstream: Upstream
) -> None:
    # Many clients write the whole body before they read. A bad token is refused before the body is
    # read; closing on the unread bytes would reset the connection and the client, still writing,
    # would see "connection reset" instead of the 401. The sidecar lets it finish (and drops it).
    hits = upstream.hits
    body = b"x" * 4_000_000
    head = (
        "POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer garbage\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(head.encode())
        time.sleep(0.3)  # the 401 is out
        sock.sendall(body)
        answers = _answers(_read_until_closed(sock))
    assert [status for status, _, _ in answers] == [401]
    assert answers[0][1]["connection"] == "close"
    assert upstream.hits == hits


def test_a_slow_reader_gets_a_large_answer_whole(sidecar: SidecarProcess) -> None:
    # The sidecar writes only as fast as the client reads (and reads the app only as fast as it
    # writes): every byte arrives, in order, however slowly it is read.
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)  # let every buffer between the app and here fill up
        data = _read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"x" * 65_536 * 16


def test_a_header_that_never_ends_is_a_431_not_a_growing_buffer(
    sidecar: SidecarProcess, upstream: Upstream
) -> None:
    hits = upstream.hits
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/orders HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(64):  # 4 MiB of one header value, never ended
                sock.sendall(b"a" * 65_536)
        except ConnectionError:
            pass  # refused (and the connection closed) before the client was done
        answers = _answers(_read_until_closed(sock))
    assert [status for status, _, _ in answers] == [431]
    assert json.loads(answers[0][2])["reason"] == "headers_too_large"
    assert upstream.hits == hits


def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(sidecar: SidecarProcess) -> None:
    # `printf 'GET …' | nc`: the request, then the end of the client's sending side.
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(b"GET /slow/half-closed HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answers = _answers(_read_until_closed(sock))
    assert [(status, json.loads(body)["path"]) for status, _, body in answers] == [(200, "/slow/half-closed")]
