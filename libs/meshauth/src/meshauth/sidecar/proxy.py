"""The auth sidecar: verify, strip, sign, forward. One instance per pod, in front of gunicorn.

Per request:

0. The request target must be a plain path (:mod:`meshauth.sidecar.target`): the sidecar only ever
   talks to its own app, at the fixed ``MESHAUTH_SIDECAR_UPSTREAM``; every other form is a 400.
   Decisions below are made on the decoded path the app will route.
1. Nothing is answered here but refusals: the sidecar's own metrics (``/metrics/sidecar``) are on a
   separate listener (``MESHAUTH_SIDECAR_METRICS_LISTEN``, :func:`create_metrics_server`) that the
   Service's public port and the Ingress never reach.
2. Requests with more header bytes than ``max_header_bytes`` get 431, bodies over
   ``max_body_bytes`` get 413, before anything reaches the app.
3. Every inbound identity header is dropped (:func:`meshauth.headers.is_identity_header`).
4. On a public path (``MESHAUTH_PUBLIC_PATHS``: an entry ending in ``/`` is a prefix of whole
   segments, any other entry one exact path, as the probes are everywhere) the request is
   forwarded anonymously without looking at ``Authorization`` (which is dropped), so probes never
   depend on tokens or on identity.
5. Elsewhere, a bearer token is verified: invalid -> 401 JSON with ``WWW-Authenticate`` (503 while
   the keys are unavailable), never forwarded; valid -> forwarded with the signed principal headers
   and the ``Authorization`` header (the app may need the token for profile lookups).
   No token -> forwarded anonymously, without principal headers: the app decides per view.
6. ``X-Request-ID`` is kept when sane, generated otherwise, and echoed on the response;
   ``X-Forwarded-For`` gets the peer appended. ``X-Forwarded-Proto`` is the sidecar's own scheme,
   or the inbound value when the peer is a trusted proxy (``MESHAUTH_SIDECAR_TRUSTED_PROXIES``, the
   ingress): the app (gunicorn trusts the sidecar) takes it for ``request.is_secure()``.

Request bodies are read whole (within ``max_body_bytes`` and ``body_timeout``: 413 / 408) before
the app is asked, so slow clients cost the sidecar a coroutine and never an app worker; responses
stream back; upstream connections are pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshauth.errors import InvalidToken
from meshauth.headers import PrincipalSigner, bearer_token, is_identity_header
from meshauth.principal import Principal
from meshauth.sidecar.config import SidecarConfig
from meshauth.sidecar.logging import AccessLogger
from meshauth.sidecar.metrics import SidecarMetrics
from meshauth.sidecar.protocol import Answer, BodyIncomplete, BodyTooLarge, HttpServer, Request, error_answer
from meshauth.sidecar.stall import Stalled, StallGuard
from meshauth.sidecar.target import BadTarget, Target, parse_target
from meshauth.sidecar.upstream import HOP_BY_HOP, Disconnected, Pool, Response, UpstreamError, UpstreamTimeout
from meshcontract import LIVEZ, REQUEST_ID_HEADER, SIDECAR_METRICS, is_probe, valid_request_id

__all__ = ["METRICS_PATH", "Sidecar", "create_metrics_server", "create_server"]

log = logging.getLogger("meshauth.sidecar")

METRICS_PATH: Final = SIDECAR_METRICS
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Set by the sidecar itself: the inbound values are replaced, not passed along. ``Expect`` is answered
# here (the body is read before the app is asked).
# gunicorn reads any of the three scheme headers from its trusted peer (the sidecar): none may pass.
_REPLACED: Final = frozenset(
    {
        "authorization",
        REQUEST_ID_HEADER.lower(),
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-protocol",
        "x-forwarded-ssl",
        "expect",
        # The body is forwarded whole, with its own length; Host is added when the client sent none.
        "content-length",
    }
)
# Methods whose requests announce a body even when it is empty.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_BUFFER_LIMIT: Final = 65_536
_REQUEST_ID: Final = REQUEST_ID_HEADER.lower()
_MAX_HEADER_NAMES: Final = 1024


class _BodyRefused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def _json_response(
    status: int,
    reason: str,
    detail: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    close: bool = False,
) -> Answer:
    out = [(REQUEST_ID_HEADER, request_id), *(headers or {}).items()]
    return error_answer(status, reason, detail, out, close=close)


def _denial(exc: InvalidToken, request_id: str) -> Answer:
    if exc.reason == "jwks_unavailable":
        # The token may be fine: a 401 would make the client log in again for nothing.
        return _json_response(503, exc.reason, exc.detail, request_id, {"Retry-After": "5"})
    return _json_response(
        401, exc.reason, exc.detail, request_id, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def _is_trusted(peer: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _request_id(request: Request) -> str:
    request_id = request.value(_REQUEST_ID)
    return request_id if valid_request_id(request_id) else _new_request_id()


# Generated request ids: 64 random bits per process, then a counter (a uuid4 per request costs a
# getrandom call); 32 hex digits like a uuid4's.
_ID_PREFIX: Final = uuid.uuid4().hex[:16]
_id_counter = itertools.count()


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


class Sidecar:
    """The proxy's state (config, verifier, upstream pool, metrics) and its request handler."""

    def __init__(self, config: SidecarConfig, metrics: SidecarMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or SidecarMetrics()
        self.verifier = config.verifier(metrics=self.metrics.auth, mode="sidecar")
        jwks = self.verifier.jwks
        # Age at scrape time, not at the last verification.
        self.metrics.auth.jwks_age.set_function(lambda: jwks.age() or 0.0)
        self.shutting_down = False
        self._signer = PrincipalSigner(config.principal_secret)
        # Which inbound header names are dropped, decided once per name (bounded: names are the
        # client's choice).
        self._dropped: dict[str, bool] = {}
        # The only place requests go: the request target contributes a path and a query, nothing else.
        self._pool: Pool | None = None
        self._host = ""
        self._refresher: asyncio.Task[None] | None = None
        self.stall = StallGuard(config.stall_timeout, self._app_answers) if config.stall_timeout > 0 else None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream pool and load the JWKS (a failure is logged; requests then get 503)."""
        self._pool = Pool(self.config)
        await self._pool.start()
        host, port = self._pool.host_port()
        # The Host of a request whose client sent none (HTTP/1.0): the app's own address.
        self._host = host if port in (0, 80) else f"{host}:{port}"
        if not await asyncio.to_thread(self.verifier.jwks.refresh):
            log.warning("JWKS not loaded at start; tokens get 503 until identity answers")
        self._refresher = asyncio.create_task(self._refresh_jwks())

    async def close(self) -> None:
        """Stop the refresher and close the upstream pool."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.stall is not None:
            await self.stall.close()
        if self._pool is not None:
            await self._pool.close()
        await asyncio.to_thread(self.verifier.close)

    async def _refresh_jwks(self) -> None:
        # Refreshing ahead of the TTL keeps fetches off the request path entirely.
        jwks = self.verifier.jwks
        while True:
            age = jwks.age()
            fresh = age is not None and age < jwks.ttl
            await asyncio.sleep(jwks.ttl * 0.8 if fresh else jwks.min_refresh_interval)
            try:
                await asyncio.to_thread(jwks.refresh)
            except Exception:  # the refresher must survive anything
                log.exception("JWKS refresh failed")

    # -- requests ---------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Answer:
        """The server's handler: every request to the sidecar's public port."""
        try:
            target = parse_target(request.target, self.config.max_url_bytes)
        except BadTarget as exc:
            self.metrics.rejected_requests.labels(exc.reason).inc()
            return _json_response(exc.status, exc.reason, exc.detail, _request_id(request))
        path = target.path
        # Probe traffic would drown the signal in the request metrics (scrapes go to the metrics listener).
        if is_probe(path):
            return await self._serve(request, target)
        start = time.perf_counter()
        self.metrics.active_requests.inc()
        status = 500
        try:
            response = await self._serve(request, target)
            status = response.status
            return response
        finally:
            self.metrics.active_requests.dec()
            method = request.method if request.method in KNOWN_METHODS else "_OTHER"
            self.metrics.observe_request(method, status, time.perf_counter() - start)

    async def handle_metrics(self, request: Request) -> Answer:
        """The metrics listener's handler: ``GET /metrics/sidecar`` and nothing else."""
        if request.path != METRICS_PATH or request.method not in ("GET", "HEAD"):
            return _json_response(404, "not_found", "Not found.", _request_id(request))
        body = generate_latest(self.metrics.registry)
        return Answer(200, [("Content-Type", CONTENT_TYPE_LATEST)], body)

    async def _serve(self, request: Request, target: Target) -> Answer:
        request_id = _request_id(request)
        if self.shutting_down:
            return _json_response(503, "shutting_down", "The service is restarting.", request_id)
        if len(request.headers) > self.config.max_headers:
            self.metrics.rejected_requests.labels("too_many_headers").inc()
            detail = f"Send at most {self.config.max_headers} header fields."
            return _json_response(431, "too_many_headers", detail, request_id)
        if sum(len(k) + len(v) + 4 for k, v in request.headers) > self.config.max_header_bytes:
            auth = request.values("authorization")
            if any(len(value) > self.config.max_token_bytes for value in auth):
                # An oversized token is a token problem: answer like the verifier would.
                return _denial(InvalidToken("too_large"), request_id)
            self.metrics.rejected_requests.labels("headers_too_large").inc()
            return _json_response(431, "headers_too_large", "Request headers are too large.", request_id)
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            self.metrics.rejected_requests.labels("body_too_large").inc()
            return _json_response(413, "body_too_large", "The request body is too large.", request_id)

        principal: Principal | None = None
        token: str | None = None
        if not self.config.is_public(target.path):
            try:
                principal, token = await self._authenticate(request)
            except InvalidToken as exc:
                return _denial(exc, request_id)
        body: bytes | None = None
        if request.has_body:
            try:
                body = await self._read_body(request)
            except _BodyRefused as exc:
                self.metrics.rejected_requests.labels(exc.reason).inc()
                # The rest of the body is not worth waiting for.
                return _json_response(exc.status, exc.reason, exc.detail, request_id, close=True)
        head = self._upstream_head(request, principal, token, request_id, body)
        return await self._forward(request, head, body, request_id)

    async def _authenticate(self, request: Request) -> tuple[Principal | None, str | None]:
        values = request.values("authorization")
        if not values:
            self.metrics.auth.decision("anonymous")
            return None, None
        try:
            if len(values) > 1:
                raise InvalidToken("malformed", "Send exactly one Authorization header.")
            token = bearer_token(values[0])
        except InvalidToken as exc:
            self.metrics.auth.decision("rejected", exc.reason)
            raise
        return await self.verifier.averify(token), token

    def _drops(self, name: str) -> bool:
        dropped = self._dropped.get(name)
        if dropped is None:
            lowered = name.lower()
            dropped = lowered in HOP_BY_HOP or lowered in _REPLACED or is_identity_header(name)
            if len(self._dropped) >= _MAX_HEADER_NAMES:
                self._dropped.clear()
            self._dropped[name] = dropped
        return dropped

    def _upstream_head(
        self,
        request: Request,
        principal: Principal | None,
        token: str | None,
        request_id: str,
        body: bytes | None,
    ) -> bytes:
        """The request line and headers sent to the app, as bytes ready to write.

        The target is the client's, already checked to be origin-form (:func:`parse_target`); the
        headers are the client's minus those dropped here, plus the sidecar's own. Values arrive
        from llhttp, which refuses CR, LF and NUL in them, so none can start another header.
        """
        listed = (
            {name.strip().lower() for value in request.values("connection") for name in value.split(",")}
            if "connection" in request
            else None
        )
        lines = [f"{request.method} {request.target} HTTP/1.1\r\n"]
        for name, value in request.headers:
            if self._drops(name) or (listed and name.lower() in listed):
                continue
            lines.append(f"{name}: {value}\r\n")
        if "host" not in request:
            lines.append(f"Host: {self._host}\r\n")
        if principal is not None and token is not None:
            lines.append(f"Authorization: Bearer {token}\r\n")
            for name, value in self._signer.sign(principal, token).items():
                lines.append(f"{name}: {value}\r\n")
        peer = request.peer
        forwarded_for = ", ".join(request.values("x-forwarded-for"))
        proto = "http"  # the sidecar speaks plain HTTP: TLS ends at the ingress
        if self.config.trusted_proxies and _is_trusted(peer, self.config.trusted_proxies):
            claimed = request.value("x-forwarded-proto").lower()
            proto = claimed if claimed in ("http", "https") else proto
        lines.append(
            f"{REQUEST_ID_HEADER}: {request_id}\r\n"
            f"X-Forwarded-For: {f'{forwarded_for}, {peer}' if forwarded_for else peer}\r\n"
            f"X-Forwarded-Proto: {proto}\r\n"
        )
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        elif request.method in _BODY_METHODS:
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        # surrogateescape: bytes that are not UTF-8 reach the app exactly as the client sent them.
        return "".join(lines).encode("utf-8", "surrogateescape")

    async def _read_body(self, request: Request) -> bytes:
        """The whole request body, read before the app is involved (as nginx buffers requests).

        An app worker is taken only once the body is here: a client dribbling its body ties up a
        coroutine of the sidecar (for at most ``body_timeout``), never a gunicorn worker. A chunked
        body is counted as it arrives, so it cannot exceed the cap either.
        """
        try:
            if request.value("expect").lower() == "100-continue":
                # The headers passed every check: the client may send the body now.
                request.send_continue()
            async with asyncio.timeout(self.config.body_timeout):
                return await request.read_body(self.config.max_body_bytes)
        except BodyTooLarge:
            raise _BodyRefused(413, "body_too_large", "The request body is too large.") from None
        except TimeoutError:
            raise _BodyRefused(
                408, "body_timeout", f"The request body did not arrive within {self.config.body_timeout:g} s."
            ) from None
        except (BodyIncomplete, ConnectionError):
            raise _BodyRefused(
                400, "body_incomplete", "The request body ended early or is malformed."
            ) from None

    async def _forward(self, request: Request, head: bytes, body: bytes | None, request_id: str) -> Answer:
        assert self._pool is not None, "start() was not awaited"  # noqa: S101 - programming error
        # A pooled connection the app just closed or reset (a worker recycled, stopping or killed)
        # fails before the app read anything: a request without a body can safely be tried once
        # more on a fresh connection. So can one the app deduplicates (an Idempotency-Key, as Go's
        # net/http decides too) if its body is small: the buffered bytes are sent again as they are.
        replayable = body is None or (len(body) <= _BUFFER_LIMIT and "idempotency-key" in request)
        message = head + body if body else head
        head_only = request.method == "HEAD"
        if self.stall is not None and self.stall.stalled:
            # Nothing reaches a stalled app: answered at once, it is asked again every second.
            return self._upstream_error("stalled", 503, request_id, retry_after=1)
        try:
            try:
                upstream = await self._ask(message, head_only)
            except Disconnected:
                if not replayable:
                    raise
                upstream = await self._ask(message, head_only, fresh=True)
        except Stalled:
            return self._upstream_error("stalled", 504, request_id)
        except UpstreamTimeout as exc:
            return self._upstream_error(exc.kind, 504, request_id)
        except Disconnected as exc:
            return self._upstream_error(exc.kind, 502, request_id)
        except UpstreamError as exc:
            # Nothing listens (the app is down or restarting): a 503 (as Envoy answers), not a bad
            # gateway; clients and load balancers retry a 503. An answer the sidecar cannot read
            # is the app's fault: 502.
            return self._upstream_error(exc.kind, 503 if exc.kind == "connect" else 502, request_id)
        return await self._relay(request, upstream, request_id)

    async def _ask(self, message: bytes, head_only: bool, fresh: bool = False) -> Response:
        """The app's answer to ``message`` (its head); raises :class:`Stalled` once the app stalls."""
        assert self._pool is not None, "start() was not awaited"  # noqa: S101 - programming error
        call = self._pool.request(message, head_only=head_only, fresh=fresh)
        if self.stall is None:
            return await call
        upstream = await self.stall.call(call)
        self.stall.answered()
        return upstream

    async def _app_answers(self) -> bool:
        """Whether the app answers its liveness path at all (any status), within ``http_timeout``."""
        assert self._pool is not None, "start() was not awaited"  # noqa: S101 - programming error
        probe = f"GET {LIVEZ} HTTP/1.1\r\nHost: {self._host}\r\n\r\n".encode()
        try:
            async with asyncio.timeout(self.config.http_timeout):
                answer = await self._pool.request(probe, head_only=False, fresh=True)
        except (TimeoutError, UpstreamError):
            return False
        answer.release()
        return True

    def _upstream_error(self, kind: str, status: int, request_id: str, retry_after: int = 5) -> Answer:
        self.metrics.upstream_errors.labels(kind).inc()
        log.warning("upstream %s: %s", kind, self.config.upstream)
        retry = {"Retry-After": str(retry_after)} if status == 503 else None
        return _json_response(
            status, "upstream_unavailable", "The service is unavailable, retry shortly.", request_id, retry
        )

    async def _relay(self, request: Request, upstream: Response, request_id: str) -> Answer:
        """The app's answer for the client: whole when it is small, else streamed as it arrives."""
        headers = upstream.headers  # hop-by-hop ones already gone
        if not any(name.lower() == _REQUEST_ID for name, _ in headers):
            headers = [*headers, (REQUEST_ID_HEADER, request_id)]
        length = upstream.content_length
        bodiless = request.method == "HEAD" or upstream.status in (204, 304)
        if bodiless:
            upstream.release()
            # The app's Content-Length (of the body a GET would get) is passed on as it is.
            return Answer(upstream.status, headers, reason=upstream.reason)
        head = b""
        if length is None or length <= _BUFFER_LIMIT:
            # Most API answers are small, often chunked (no Content-Length): buffer up to the
            # limit and answer in one write; only larger bodies are streamed.
            try:
                head = await upstream.read_up_to(_BUFFER_LIMIT + 1)
            except UpstreamError as exc:
                upstream.release()
                return self._upstream_error(
                    exc.kind, 504 if isinstance(exc, UpstreamTimeout) else 502, request_id
                )
            if len(head) <= _BUFFER_LIMIT and upstream.at_eof():
                upstream.release()
                return Answer(upstream.status, headers, head, reason=upstream.reason)
        return Answer(upstream.status, headers, reason=upstream.reason, stream=self._rest(upstream, head))

    async def _rest(self, upstream: Response, head: bytes) -> AsyncIterator[bytes]:
        """A large answer's body, piece by piece; the app's connection is released at the end."""
        try:
            if head:
                yield head
            async for chunk in upstream.iter_chunks():
                yield chunk
        except UpstreamError:
            # Headers are gone already: the only signal left is a cut connection.
            self.metrics.upstream_errors.labels("stream").inc()
            raise ConnectionAbortedError("the app's answer broke off") from None
        finally:
            upstream.release()


def create_server(sidecar: Sidecar) -> HttpServer:
    """The server for the sidecar's public port, running ``sidecar.handle``."""
    config = sidecar.config
    # Hard caps, generous on purpose: the handler enforces the real limits and answers them in JSON
    # (an oversized token as 401 too_large, other headers as 431). The target's own length is
    # checked exactly by the server and by parse_target alike (414).
    return HttpServer(
        sidecar.handle,
        max_target_bytes=config.max_url_bytes,
        max_fields=config.max_headers * 2,
        max_field_bytes=max(8190, max(config.max_header_bytes, config.max_token_bytes) * 4),
        max_body_bytes=config.max_body_bytes,
        access_log=AccessLogger(logging.getLogger("meshauth.sidecar.access")),
    )


def create_metrics_server(sidecar: Sidecar) -> HttpServer:
    """The metrics listener: ``/metrics/sidecar`` for Prometheus, on its own port (no access log)."""
    return HttpServer(
        sidecar.handle_metrics,
        max_target_bytes=1024,
        max_fields=100,
        max_field_bytes=16_384,
        max_body_bytes=0,
    )
