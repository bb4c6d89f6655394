"""The sidecar's client for its app: HTTP/1.1 over a keep-alive pool, set up once, parsed lean.

The app is gunicorn in the same pod, reached over a unix domain socket on a shared memory volume
(``MESHAUTH_SIDECAR_UPSTREAM=unix:/run/gunicorn/app.sock``) or over loopback TCP
(``http://127.0.0.1:8080``). The sidecar sends it one kind of request (a head it built itself, and
a body it already holds whole) and relays the answer, so this client is an ``asyncio.Protocol``
rather than a general HTTP client: a general client's per-request machinery (URL objects, timers,
cookie jars, tracing hooks, response objects with their own stream readers) cost the sidecar more
CPU than verifying the token did. What it keeps:

- connections are kept alive and reused, most recently used first (gunicorn's gthread workers keep
  them open for ``GUNICORN_KEEPALIVE`` seconds; sync workers would close every one after a single
  request); one idle longer than :data:`KEEPALIVE_SECONDS` is closed rather than reused;
- a host name is resolved once, at start: the app does not move while the pod lives;
- at most ``MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS`` connections; further requests wait for one;
- a connection timeout (``MESHAUTH_HTTP_TIMEOUT``) and a read timeout
  (``MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT``: the longest wait for the answer's head, and then for
  each piece of its body);
- strict framing (``Content-Length``, chunked, or until close; never a body on ``HEAD``, 1xx, 204
  or 304): a connection is reused only after an answer that ended exactly where its framing said.
  An answer that cannot be read that way is refused (502), never relayed half-understood.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

from meshauth.sidecar.config import SidecarConfig

__all__ = [
    "HOP_BY_HOP",
    "KEEPALIVE_SECONDS",
    "UNIX_HOST",
    "BadResponse",
    "ConnectFailed",
    "Disconnected",
    "Pool",
    "Response",
    "UpstreamError",
    "UpstreamTimeout",
]

#: Headers that describe one connection, never passed on (RFC 9110 section 7.6.1).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The answer's headers the parser reads: how the body is framed, and whether the connection stays.
_FRAMING: Final = HOP_BY_HOP | {"content-length"}
#: The ``Host`` a request to a unix socket carries when its client sent none.
UNIX_HOST: Final = "localhost"
#: Below gunicorn's keep-alive (GUNICORN_KEEPALIVE, 5 s by default), so the pool never picks a
#: connection gunicorn is about to close.
KEEPALIVE_SECONDS: Final = 4.0
# An answer's head larger than this is not gunicorn's.
_MAX_HEAD: Final = 65_536
# Body bytes held for a slow client before the app's connection stops being read.
_HIGH_WATER: Final = 262_144
_BODILESS_STATUS: Final = frozenset({204, 304})


class UpstreamError(Exception):
    """The app could not be asked or did not answer usably; ``kind`` labels the metric."""

    kind = "connect"


class ConnectFailed(UpstreamError):
    """Nothing accepted a connection (the app is down or restarting)."""


class Disconnected(UpstreamError):
    """The app closed the connection before any byte of an answer: the request may be replayed."""

    kind = "disconnected"


class UpstreamTimeout(UpstreamError):
    """No answer (or no next piece of it) within the read timeout."""

    kind = "timeout"


class BadResponse(UpstreamError):
    """An answer that is not well-formed HTTP/1.1, or one cut off before its end."""

    kind = "read"


class Response:
    """One answer of the app: status, reason, end-to-end headers, and its body as it arrives.

    ``headers`` are the app's, in order, without the hop-by-hop ones (:data:`HOP_BY_HOP` and those
    its ``Connection`` header names): what a proxy passes on.
    """

    __slots__ = (
        "status",
        "reason",
        "headers",
        "content_length",
        "_conn",
        "_chunks",
        "_size",
        "_done",
        "_error",
    )

    def __init__(
        self, conn: _Connection, status: int, reason: str, headers: list[tuple[str, str]], length: int | None
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        #: The body's announced length, None when chunked or until close.
        self.content_length = length
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: UpstreamError | None = None

    def at_eof(self) -> bool:
        """True once the whole body has arrived and been read."""
        return self._done and not self._chunks

    async def read_up_to(self, limit: int) -> bytes:
        """Up to ``limit`` body bytes: fewer only when the body ends first."""
        while self._size < limit and not self._done:
            await self._conn.wait_for_body()
            self._raise_error()
        if not self._chunks:
            return b""
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._size = 0
        if len(data) > limit:
            self._chunks.append(data[limit:])
            self._size = len(data) - limit
            data = data[:limit]
        self._conn.consumed()
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The rest of the body, piece by piece as the app sends it."""
        while True:
            while not self._chunks and not self._done:
                await self._conn.wait_for_body()
                self._raise_error()
            if not self._chunks:
                return
            chunk = self._chunks.popleft()
            self._size -= len(chunk)
            self._conn.consumed()
            yield chunk

    def release(self) -> None:
        """Hand the connection back: to the pool after a complete answer, closed otherwise."""
        self._conn.finish(reusable=self._done and self._error is None)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- fed by the connection --------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        self._done = True


# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the app, parsing answers as bytes arrive."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._state = _DONE
        self._head_only = False
        self._remaining = 0
        self._keep_alive = True
        self._received = False
        self._response: Response | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE:
            # Nothing was asked: bytes now mean a confused app, and this connection is not reused.
            self._keep_alive = False
            self.close()
            return
        self._received = True
        self._buffer += data
        try:
            self._parse()
        except BadResponse as exc:
            self._fail(exc)
            self.close()
            return
        self._wake()

    def eof_received(self) -> bool:
        if self._state == _UNTIL_CLOSE:
            self._finish_body()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE:
            self._finish_body()
        elif self._state != _DONE:
            if self._received:
                self._fail(BadResponse("the app closed the connection in the middle of its answer"))
            else:
                self._fail(Disconnected("the app closed the connection before answering"))
        self._pool.forget(self)
        self._wake()

    # -- used by the pool and the response ---------------------------------------------------------

    async def exchange(self, request: bytes, *, head_only: bool, timeout: float) -> Response:
        """Send ``request`` (head and body) and wait for the answer's head."""
        assert self.transport is not None  # noqa: S101 - connected by the pool
        if self.closed:
            raise Disconnected("the app closed the connection before answering")
        self._state, self._head_only, self._received = _HEAD, head_only, False
        self._response, self._keep_alive = None, True
        self._timeout = timeout
        self.transport.write(request)
        while self._response is None:
            await self.wait_for_body()
        response = self._response
        response._raise_error()
        return response

    async def wait_for_body(self) -> None:
        """Wait until the parser has something new (more body, the head, the end, or an error)."""
        if self.closed:
            return  # connection_lost() has ended the answer one way or the other
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def consumed(self) -> None:
        """The response's buffer was drained: read from the app again if it was paused."""
        response = self._response
        if self._paused and response is not None and response._size < _HIGH_WATER and self.transport:
            self._paused = False
            self.transport.resume_reading()

    def finish(self, *, reusable: bool) -> None:
        """The exchange is over: back to the pool if the answer ended cleanly, closed otherwise."""
        self._response = None
        if reusable and self._keep_alive and self._state == _DONE and not self.closed and not self._buffer:
            self._pool.put_back(self)
        else:
            self._state = _DONE
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- internals --------------------------------------------------------------------------------

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            return
        self._fail(UpstreamTimeout("the app did not answer in time"))
        self.close()
        waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._response is None:
            # No head yet: exchange() raises it from a stand-in response.
            self._response = Response(self, 0, "", [], None)
        self._response._fail(error)
        self._state = _DONE
        self._keep_alive = False

    def _finish_body(self) -> None:
        self._state = _DONE
        if self._response is not None:
            self._response._done = True

    def _parse(self) -> None:
        buffer = self._buffer
        while buffer:
            state = self._state
            if state == _HEAD:
                head = self._take_line(b"\r\n\r\n", _MAX_HEAD, "the app's answer head is too large")
                if head is None:
                    return
                self._start(head)
            elif state == _LENGTH:
                if self._take_body():
                    self._finish_body()
            elif state == _CHUNK_SIZE:
                line = self._take_line(b"\r\n", 1024, "a chunk size line is too long")
                if line is None:
                    return
                size = line.split(b";", 1)[0].strip()
                if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                    raise BadResponse("a chunk size is not hexadecimal")
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_DATA:
                if self._take_body():
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise BadResponse("a chunk does not end with CRLF")
                del buffer[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                trailer = self._take_line(b"\r\n", _MAX_HEAD, "the app's trailers are too large")
                if trailer is None:
                    return
                if not trailer:  # the empty line after the trailers (which are dropped)
                    self._finish_body()
            elif state == _UNTIL_CLOSE:
                self._body(bytes(buffer))
                buffer.clear()
            else:  # _DONE with bytes left: more than the answer, so the connection is not reused
                self._keep_alive = False
                buffer.clear()

    def _take_line(self, end: bytes, limit: int, too_long: str) -> bytes | None:
        """The buffer up to ``end`` (both removed from it), or None while ``end`` has not arrived."""
        buffer = self._buffer
        index = buffer.find(end)
        if index < 0:
            if len(buffer) > limit:
                raise BadResponse(too_long)
            return None
        line = bytes(buffer[:index])
        del buffer[: index + len(end)]
        return line

    def _take_body(self) -> bool:
        """Move what the buffer holds of the current length-framed part to the body; True when complete."""
        buffer = self._buffer
        take = min(self._remaining, len(buffer))
        self._body(bytes(buffer[:take]) if take < len(buffer) else bytes(buffer))
        del buffer[:take]
        self._remaining -= take
        return not self._remaining

    def _body(self, data: bytes) -> None:
        response = self._response
        if response is None or not data:
            return
        response._feed(data)
        if response._size >= _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _start(self, head: bytes) -> None:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            raise BadResponse("the app's answer head is not UTF-8") from None
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise BadResponse(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            if status == 101:
                raise BadResponse("the app switched protocols")
            return  # an interim answer (103 Early Hints): the final one follows
        # No bare CR or LF anywhere: each would end a line for some reader (a split response).
        if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
            raise BadResponse("a bare CR or LF in the app's answer head")
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        keep_alive = version == "HTTP/1.1"
        listed: set[str] = set()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            # No obs-fold (a line starting with whitespace), no whitespace before the colon.
            if not colon or not name or name[0] in " \t" or name[-1] in " \t":
                raise BadResponse(f"a malformed header line: {line[:80]!r}")
            value = value.strip(" \t")
            lowered = name.lower()
            if lowered in _FRAMING:
                if lowered == "content-length":
                    if not value.isdigit() or (length is not None and length != int(value)):
                        raise BadResponse("a bad Content-Length")
                    length = int(value)
                elif lowered == "transfer-encoding":
                    chunked = value.rpartition(",")[2].strip().lower() == "chunked"
                    if not chunked:
                        keep_alive = False  # framed by the end of the connection
                elif lowered == "connection":
                    listed.update(token.strip().lower() for token in value.split(","))
                    if "close" in listed:
                        keep_alive = False
                    elif "keep-alive" in listed:
                        keep_alive = True
                if lowered in HOP_BY_HOP:
                    continue  # this connection's business, not the client's
            headers.append((name, value))
        if listed - {"close", "keep-alive"}:
            # Names the app's Connection header lists are hop-by-hop too (RFC 9110 section 7.6.1).
            headers = [(n, v) for n, v in headers if n.lower() not in listed]
        self._keep_alive = self._keep_alive and keep_alive
        bodiless = self._head_only or status in _BODILESS_STATUS
        if chunked:
            # Both a length and chunked: chunked wins (RFC 9112 section 6.3), the length goes.
            length = None
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        self._response = Response(self, status, reason, headers, length)
        if bodiless:
            self._finish_body()
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH
            if not length:
                self._finish_body()
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE


class Pool:
    """Keep-alive connections to the app, and the one thing done with them: :meth:`request`."""

    def __init__(self, config: SidecarConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self._config = config
        self._address: tuple[str, int] | None = None
        self._idle: list[_Connection] = []
        self._open = 0
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def start(self) -> None:
        """Resolve the app's host once (fails loudly now rather than on every request later)."""
        if self._config.upstream_socket:
            return
        host, port = self.host_port()
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        address = infos[0][4]
        self._address = (str(address[0]), int(address[1]))

    def host_port(self) -> tuple[str, int]:
        """The app's host and port from ``MESHAUTH_SIDECAR_UPSTREAM`` (``localhost``, 0 for a socket)."""
        if self._config.upstream_socket:
            return UNIX_HOST, 0
        parts = urlsplit(self._config.upstream)
        return parts.hostname or "", parts.port or 80

    async def request(self, request: bytes, *, head_only: bool, fresh: bool = False) -> Response:
        """Send one request (its complete bytes) and return the answer once its head is in.

        ``fresh`` asks for a new connection rather than a pooled one (for a replay). Raises an
        :class:`UpstreamError`; the caller must :meth:`Response.release` what it gets.
        """
        conn = await self._acquire(fresh)
        try:
            return await conn.exchange(request, head_only=head_only, timeout=self._config.upstream_timeout)
        except BaseException:
            conn.finish(reusable=False)
            raise

    async def close(self) -> None:
        """Close every idle connection (answers in flight keep theirs until released)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    # -- connections ------------------------------------------------------------------------------

    async def _acquire(self, fresh: bool) -> _Connection:
        while True:
            if not fresh:
                now = self.loop.time()
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                        return conn
                    conn.close()
            # One connection opened at a time: gunicorn's workers share one listening socket, and a
            # burst of connections is accepted by whichever worker wakes first, often all by one
            # (which then serves them on one core while the others idle). Opened one after another,
            # each lands while the worker that took the previous one is busy with its request.
            if self._open < self._config.upstream_connections and (fresh or not self._connecting):
                return await self._connect()
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        self._open += 1
        self._connecting += 1
        conn = _Connection(self)
        try:
            async with asyncio.timeout(self._config.http_timeout):
                if self._config.upstream_socket:
                    await self.loop.create_unix_connection(lambda: conn, self._config.upstream_socket)
                else:
                    assert self._address is not None, "start() was not awaited"  # noqa: S101
                    await self.loop.create_connection(lambda: conn, *self._address)
        except (OSError, TimeoutError) as exc:
            self._open -= 1
            raise ConnectFailed(f"cannot connect to the app: {exc}") from None
        finally:
            self._connecting -= 1
            self._wake_one()  # the next waiter takes an idle connection or opens the next one
        return conn

    def put_back(self, conn: _Connection) -> None:
        """A connection whose answer ended cleanly: reused next (most recently used first)."""
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """A connection has closed (either side): it no longer counts against the limit."""
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
