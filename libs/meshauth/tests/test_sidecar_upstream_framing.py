"""How the sidecar reads its app's answers: every HTTP/1.1 framing gunicorn may use is relayed
exactly, and an answer it cannot frame is a JSON 502, never relayed half-understood (so a confused
app cannot split a response or desynchronise a pooled connection)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshauth_testkit import RawApp, raw_request

#: Scripted answers by request path: the exact bytes the app stand-in writes.
ANSWERS: dict[str, bytes] = {
    "/chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: for the sidecar only\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: dropped\r\n\r\n"
    ),
    "/until-close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
    "/interim": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    ),
    "/empty": b"HTTP/1.1 204 No Content\r\nX-Answer: empty\r\n\r\n",
    "/head": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n",
    # Not HTTP/1.1 as a client can rely on: each is a 502.
    "/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/folded": b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  folded\r\nContent-Length: 2\r\n\r\nok",
    "/bare-lf": b"HTTP/1.1 200 OK\r\nX-Evil: a\nSet-Cookie: session=stolen\r\nContent-Length: 2\r\n\r\nok",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "/not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it",
}


#: Answers that end by closing the connection.
CLOSING = frozenset({"/until-close", "/cut"})


class ScriptedApp(RawApp):
    """Writes :data:`ANSWERS` by request path, on kept-alive connections."""

    def serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                while reader.readline() not in (b"\r\n", b""):
                    pass  # the sidecar sends no body on these requests
                conn.sendall(ANSWERS[path])
                if path in CLOSING:
                    return


@pytest.fixture
def app() -> Iterator[ScriptedApp]:
    with contextlib.closing(ScriptedApp()) as server:
        yield server


@pytest.fixture
def sidecar(start_sidecar: Any, app: ScriptedApp) -> Any:
    return start_sidecar(MESHAUTH_PUBLIC_PATHS="/", MESHAUTH_SIDECAR_UPSTREAM=app.url)


def test_every_framing_is_relayed_exactly_over_one_kept_alive_connection(
    sidecar: Any, app: ScriptedApp
) -> None:
    with httpx.Client(base_url=sidecar.url) as client:
        chunked = client.get("/chunked")
        interim = client.get("/interim")
        empty = client.get("/empty")
        head = client.head("/head")
        assert (chunked.status_code, chunked.text) == (200, "hello, world")
        assert "X-Trailer" not in chunked.headers
        assert "X-Hop" not in chunked.headers, "a header the app's Connection header lists is hop-by-hop"
        assert (interim.status_code, interim.text) == (200, "final")
        assert (empty.status_code, empty.headers["X-Answer"], empty.content) == (204, "empty", b"")
        assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "11", b"")
        assert app.connections == 1, "every answer ended where its framing said: the connection was reused"
        closing = client.get("/until-close")
        assert (closing.status_code, closing.text) == (200, "until the end")
        again = client.get("/chunked")
        assert again.text == "hello, world"
        assert app.connections == 2, "an answer framed by the end of its connection ends that connection"


@pytest.mark.parametrize(
    "path", ["/bad-length", "/two-lengths", "/folded", "/bare-lf", "/bad-chunk", "/not-http", "/cut"]
)
def test_an_answer_that_cannot_be_framed_is_a_json_502(sidecar: Any, path: str) -> None:
    answer = raw_request(sidecar.port, f"GET {path} HTTP/1.1")
    assert answer.status_line == "HTTP/1.1 502 Bad Gateway", answer.body
    assert "set-cookie" not in answer.headers
    assert answer.json()["reason"] == "upstream_unavailable"
