"""The sidecar's HTTP/1.1 server: llhttp's parser (through httptools) under an ``asyncio.Protocol``.

The sidecar's request path is short (parse, check, verify, forward, relay), so the server around it
is most of its cost. aiohttp's built a request object, a header multidict, a payload stream, a
response object and a writer for every request; this one keeps what the sidecar uses and costs
about a third less CPU per proxied request (``make bench``). What it does:

- parses with llhttp, the parser of Node.js, in its strict mode: a request with both
  ``Content-Length`` and ``Transfer-Encoding``, a bad chunk, a bare LF or an obs-fold is refused
  (the request smuggling vectors), as is a request line that is not HTTP/1.x;
- bounds what a request may make it hold: the target (``max_target_bytes``: 414), the number and
  the bytes of header fields (hard caps: 431; the handler enforces the exact limits), and the body
  buffered for the handler (``max_body_bytes``: reading pauses above it);
- answers one request at a time per connection, in order: a pipelined request waits, and reading
  pauses until it is its turn;
- writes an answer whole in one ``write``, or streams it (chunked, or within the app's own
  ``Content-Length``) as fast as the client reads it;
- keeps connections alive as HTTP/1.1 says (HTTP/1.0 only on request) and closes one idle for
  :data:`KEEPALIVE_SECONDS`; ``draining`` makes every answer the connection's last;
- answers a request it cannot parse in the mesh's JSON error contract, with a status that says
  which limit was hit (414 for the target, 431 for headers), and one WARNING line without a
  traceback; a failure of the handler itself gets its traceback and a 500.

A request with ``Upgrade`` (and ``CONNECT``) is handed to the handler as a plain request; the
connection closes after the answer, so no other protocol is ever spoken on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, Protocol, cast
from urllib.parse import unquote

import httptools

from meshcontract import REQUEST_ID_HEADER

__all__ = [
    "KEEPALIVE_SECONDS",
    "Answer",
    "BodyIncomplete",
    "BodyTooLarge",
    "Handler",
    "HttpServer",
    "Request",
    "error_answer",
]

log = logging.getLogger("meshauth.sidecar")

#: How long a connection may stay idle between requests (aiohttp's and nginx's default: 75 s).
KEEPALIVE_SECONDS: Final = 75.0
#: How long a connection's last answer waits for its client to stop sending (nginx's lingering
#: close): closing on unread bytes resets the connection, which can destroy the answer in flight.
LINGER_SECONDS: Final = 2.0
_BODILESS_STATUS: Final = frozenset({204, 304})
# Read-size slack on top of a header cap: what one read may bring beyond the piece it ends.
_SLACK: Final = 65_536
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_REQUEST_ID: Final = REQUEST_ID_HEADER.lower()
_BAD_TARGET: Final = "The request target must be a path starting with one '/'."


class BodyTooLarge(Exception):
    """More body bytes than the reader's limit."""


class BodyIncomplete(Exception):
    """The body ended early, is malformed, or its client left."""


class Request:
    """One parsed request: its line and headers as sent, and its body as it arrives.

    ``headers`` are the fields in order, with their names as sent; :meth:`values` looks one up by
    name, case-insensitively. Values are decoded as UTF-8 with ``surrogateescape``, so bytes that
    are not UTF-8 are passed on exactly as received.
    """

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "peer",
        "keep_alive",
        "content_length",
        "has_body",
        "_fields",
        "_conn",
        "_chunks",
        "_size",
        "_complete",
        "_failed",
        "_waiter",
        "_continued",
    )

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        fields: dict[str, list[str]],
        keep_alive: bool,
    ) -> None:
        self.method = method
        #: The request target exactly as sent (for the sidecar, a path and a query).
        self.target = target
        #: ``"1.1"`` or ``"1.0"``.
        self.version = version
        self.headers = headers
        self.peer = conn.peer
        self.keep_alive = keep_alive
        self._fields = fields
        lengths = fields.get("content-length")
        # llhttp has checked it: digits only, and never beside Transfer-Encoding.
        self.content_length = int(lengths[0]) if lengths else None
        self.has_body = bool(self.content_length) or "transfer-encoding" in fields
        self._conn = conn
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = not self.has_body
        self._failed = False
        self._waiter: asyncio.Future[None] | None = None
        self._continued = False

    def values(self, name: str) -> list[str]:
        """Every value of the header ``name`` (lower case), in order; empty when it was not sent."""
        return self._fields.get(name, [])

    def value(self, name: str, default: str = "") -> str:
        """The first value of the header ``name`` (lower case)."""
        found = self._fields.get(name)
        return found[0] if found else default

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    @property
    def path(self) -> str:
        """The target's path, percent-decoded."""
        raw = self.target.partition("?")[0]
        return unquote(raw, errors="surrogateescape") if "%" in raw else raw

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue``: the client may send the body now (once, HTTP/1.1 only)."""
        if not self._continued and not self._complete and self.version == "1.1":
            self._continued = True
            self._conn.write(_CONTINUE)

    async def read_body(self, limit: int) -> bytes:
        """The whole body; raises :class:`BodyTooLarge` past ``limit`` bytes, :class:`BodyIncomplete`."""
        while not self._complete:
            if self._failed:
                raise BodyIncomplete
            if self._size > limit:
                raise BodyTooLarge
            self._waiter = self._conn.loop.create_future()
            self._conn.update_reading()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._failed:
            raise BodyIncomplete
        if self._size > limit:
            raise BodyTooLarge
        return b"".join(self._chunks)

    # -- fed by the connection --------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self) -> None:
        self._failed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Answer:
    """What the handler answers: a status, headers, and a body whole or as an iterator of pieces.

    ``close`` makes it the connection's last answer. A streamed body is sent chunked unless
    ``headers`` carry its ``Content-Length``; the iterator raising ``ConnectionError`` cuts the
    connection (the only signal left once the head is out).
    """

    __slots__ = ("status", "reason", "headers", "body", "stream", "close")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        reason: str = "",
        stream: AsyncIterator[bytes] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.stream = stream
        self.close = close

    def header(self, name: str) -> str:
        """The first value of header ``name`` (lower case), or an empty string."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return ""


def error_answer(
    status: int,
    reason: str,
    detail: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    close: bool = False,
) -> Answer:
    """The ``{"detail", "reason"}`` JSON body every refusal of the sidecar has."""
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    return Answer(status, [("Content-Type", "application/json"), *(headers or [])], body, close=close)


Handler = Callable[[Request], Awaitable[Answer]]


class AccessLog(Protocol):
    """Where the server reports each answered request."""

    @property
    def enabled(self) -> bool: ...

    def log(
        self,
        method: str,
        target: str,
        status: int,
        request_id: str,
        seconds: float,
        remote_addr: str,
        user_agent: str | None,
    ) -> None: ...


class _Refusal(Exception):
    """A request the server answers itself: it could not be parsed, or it exceeds a hard cap."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


class HttpServer:
    """A protocol factory for ``loop.create_server``, and the connections it serves.

    ``max_target_bytes`` caps the request target, ``max_fields`` and ``max_field_bytes`` the number
    and the total bytes of header fields; ``max_body_bytes`` is how much body is buffered for the
    handler before reading pauses.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_target_bytes: int,
        max_fields: int,
        max_field_bytes: int,
        max_body_bytes: int,
        access_log: AccessLog | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.handler = handler
        self.max_target_bytes = max_target_bytes
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.keepalive = keepalive
        self.connections: set[_Connection] = set()
        #: Every answer is the connection's last (set while the sidecar stops).
        self.draining = False

    def __call__(self) -> _Connection:
        return _Connection(self)

    async def shutdown(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the requests being answered, then close every connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(conn.busy for conn in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


class _Connection(asyncio.Protocol):
    """One client connection: the parser's callbacks, the queue of requests, the writer."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._target: list[bytes] = []
        self._target_size = 0
        self._headers: list[tuple[str, str]] = []
        self._fields: dict[str, list[str]] = {}
        self._field_bytes = 0
        # Bytes received since the parser last handed over a piece (httptools holds a header field
        # until it ends): bounded, so a field that never ends cannot grow without limit.
        self._unparsed = 0
        self._parsing: Request | None = None  # the request whose body is arriving
        self._queue: deque[Request | _Refusal] = deque()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._reading = True
        self._last = False  # no request after those queued (a parse error, an upgrade)
        self._lingering = False
        self._eof = False  # the client sends nothing more
        self._closed = False
        self._drained: asyncio.Future[None] | None = None  # set while the transport's buffer is full

    @property
    def busy(self) -> bool:
        """Whether a request is being answered or waits for its turn."""
        return bool(self._queue)

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's (uvloop's own class)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)
        self._wait_idle()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of what the client sends after the last answer: dropped
        self._unparsed += len(data)  # the parser's callbacks set it back to zero
        try:
            self._parser.feed_data(data)
            if self._unparsed > self.server.max_field_bytes + _SLACK:
                raise _Refusal(431, "headers_too_large", "Request headers are too large.")
        except _Refusal as refusal:
            self._refuse(refusal)
        except httptools.HttpParserUpgrade:
            self._last = True  # answered as a plain request; nothing is read after it
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            self._refuse(context if isinstance(context, _Refusal) else _malformed(exc))
        except httptools.HttpParserInvalidURLError:
            self._refuse(_Refusal(400, "bad_request_target", _BAD_TARGET))
        except httptools.HttpParserError as exc:
            self._refuse(_malformed(exc))
        self.update_reading()

    def eof_received(self) -> bool:
        if self._parsing is not None:
            self._parsing._fail()
        # Half-closed by the client: the answers still queued are written, then the connection closes.
        self._last = self._eof = True
        if self._lingering or not self._queue:
            self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._parsing is not None:
            self._parsing._fail()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None:
            self._drained.set_result(None)
            self._drained = None

    # -- httptools' callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target, self._target_size = [], 0
        self._headers, self._fields, self._field_bytes = [], {}, 0

    def on_url(self, piece: bytes) -> None:
        self._unparsed = 0
        self._target.append(piece)
        self._target_size += len(piece)
        if self._target_size > self.server.max_target_bytes:
            raise _Refusal(414, "uri_too_long", "The request target is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._unparsed = 0
        self._field_bytes += len(name) + len(value) + 4
        if len(self._headers) >= self.server.max_fields:
            raise _Refusal(431, "too_many_headers", "Too many header fields.")
        if self._field_bytes > self.server.max_field_bytes:
            raise _Refusal(431, "headers_too_large", "Request headers are too large.")
        # llhttp accepts only token characters in a name, and no CR, LF or NUL in a value.
        key = name.decode("ascii")
        text = value.decode("utf-8", "surrogateescape")
        self._headers.append((key, text))
        lowered = key.lower()
        found = self._fields.get(lowered)
        if found is None:
            self._fields[lowered] = [text]
        else:
            found.append(text)

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = Request(
            self,
            parser.get_method().decode("ascii"),
            b"".join(self._target).decode("utf-8", "surrogateescape"),
            parser.get_http_version(),
            self._headers,
            self._fields,
            parser.should_keep_alive(),
        )
        if request.has_body:
            self._parsing = request
        self._queue.append(request)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None:
            self._task = self.loop.create_task(self._answer())

    def on_body(self, data: bytes) -> None:
        self._unparsed = 0
        if self._parsing is not None:
            self._parsing._feed(data)

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing._finish()
            self._parsing = None

    # -- the connection's work --------------------------------------------------------------------

    def update_reading(self) -> None:
        """Read while the request being answered may need more bytes, and no other one waits."""
        if self.transport is None or self._closed:
            return
        parsing = self._parsing
        want = self._lingering or (
            not self._last
            and len(self._queue) <= 1
            and (parsing is None or parsing._size <= self.server.max_body_bytes)
        )
        if want != self._reading:
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def write(self, data: bytes) -> None:
        """Write to the client; raises ``ConnectionResetError`` once it is gone."""
        if self._closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _end(self) -> None:
        """After the last answer: send FIN, drop what the client still sends, close once it stops."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        if self._eof:
            self.close()  # nothing more will arrive: nothing to wait for
            return
        self._lingering = True
        self._parsing = None
        if transport.can_write_eof():
            transport.write_eof()
        self.update_reading()
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(LINGER_SECONDS, self.close)

    def _refuse(self, refusal: _Refusal) -> None:
        log.warning("malformed request from %s: %s (%s)", self.peer or "?", refusal.reason, refusal)
        if self._parsing is not None:
            self._parsing._fail()
            self._parsing = None
        self._last = True
        self._queue.append(refusal)
        if self._task is None:
            self._task = self.loop.create_task(self._answer())

    def _wait_idle(self) -> None:
        self._idle = self.loop.call_later(self.server.keepalive, self.close)

    async def _answer(self) -> None:
        """Answer the queued requests in order, then wait for the next one."""
        try:
            while self._queue and not self._closed:
                item = self._queue[0]
                if isinstance(item, _Refusal):
                    await self._send(None, _last_answer(item.status, item.reason, item.detail))
                    self._end()
                    return
                if not await self._serve(item):
                    self._end()
                    return
                self._queue.popleft()
                self.update_reading()
            if self._last:
                self._end()
        finally:
            self._task = None
            if not self._closed and not self._queue and not self._lingering:
                self._wait_idle()

    async def _serve(self, request: Request) -> bool:
        """Answer one request; whether the connection stays open for the next."""
        started = time.perf_counter()
        try:
            answer = await self.server.handler(request)
        except Exception:
            log.exception("error handling request from %s", self.peer or "?")
            answer = _last_answer(500, "internal_error", "The proxy failed; this is a bug.")
        keep = await self._send(request, answer)
        access_log = self.server.access_log
        if access_log is not None and access_log.enabled:
            request_id = answer.header(_REQUEST_ID)
            agents = request.values("user-agent")
            access_log.log(
                request.method,
                request.target,
                answer.status,
                request_id,
                time.perf_counter() - started,
                request.peer,
                agents[0] if agents else None,
            )
        # The rest of a body nobody read is not worth waiting for: the connection ends after the answer.
        return keep and request._complete

    async def _send(self, request: Request | None, answer: Answer) -> bool:
        """Write ``answer``; whether the connection may carry another request."""
        close = (
            answer.close
            or request is None
            or not request.keep_alive
            or self._last
            or self.server.draining
            or not request._complete
        )
        status = answer.status
        lines = [f"HTTP/1.1 {status} {answer.reason or _phrase(status)}\r\n"]
        head_only = request is not None and request.method == "HEAD"
        # A whole body's length is its own; a streamed one's and a HEAD answer's are the app's.
        keep_length = answer.stream is not None or head_only
        declared = False
        for name, value in answer.headers:
            if name.lower() == "content-length":
                declared = True
                if not keep_length:
                    continue
            lines.append(f"{name}: {value}\r\n")
        if not answer.header("date"):
            lines.append(f"Date: {_date()}\r\n")
        if close:
            lines.append("Connection: close\r\n")
        elif request is not None and request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        bodiless = status in _BODILESS_STATUS or status < 200
        try:
            if answer.stream is None:
                if not bodiless and not (head_only and declared):
                    lines.append(f"Content-Length: {len(answer.body)}\r\n")
                lines.append("\r\n")
                head = "".join(lines).encode("utf-8", "surrogateescape")
                self.write(head if bodiless or head_only else head + answer.body)
                return not close
            chunked = not declared and not bodiless and not head_only
            if chunked and request is not None and request.version == "1.0":
                chunked, close = False, True  # an HTTP/1.0 client reads until the connection closes
                lines.append("Connection: close\r\n")
            if chunked:
                lines.append("Transfer-Encoding: chunked\r\n")
            lines.append("\r\n")
            self.write("".join(lines).encode("utf-8", "surrogateescape"))
            await self._stream(answer.stream, chunked=chunked)
        except ConnectionError:
            if self.transport is not None:
                self.transport.abort()
            return False
        return not close

    async def _stream(self, pieces: AsyncIterator[bytes], *, chunked: bool) -> None:
        try:
            async for piece in pieces:
                if not piece:
                    continue
                self.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                if self._drained is not None:
                    await self._drained
            if chunked:
                self.write(b"0\r\n\r\n")
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()


def _last_answer(status: int, reason: str, detail: str) -> Answer:
    # The request was never parsed (or its handler failed): a fresh request ID, the connection's end.
    return error_answer(status, reason, detail, [(REQUEST_ID_HEADER, uuid.uuid4().hex)], close=True)


def _malformed(exc: Exception) -> _Refusal:
    detail = " ".join(str(exc).split())[:200]
    refusal = _Refusal(400, "malformed_request", "The request is not valid HTTP/1.1.")
    refusal.args = (detail or "unparseable",)
    return refusal


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_clock: list[object] = [0, ""]


def _date() -> str:
    # The Date header has a resolution of one second: formatted once per second.
    second = int(time.time())
    if _clock[0] != second:
        _clock[:] = [second, formatdate(second, usegmt=True)]
    return str(_clock[1])
