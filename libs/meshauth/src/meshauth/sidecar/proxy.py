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
import json
import logging
import time
import uuid
from typing import Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshauth.errors import InvalidToken
from meshauth.headers import PrincipalSigner, bearer_token, is_identity_header
from meshauth.principal import Principal
from meshauth.sidecar.config import SidecarConfig
from meshauth.sidecar.logging import AccessLogger
from meshauth.sidecar.metrics import SidecarMetrics
from meshauth.sidecar.protocol import SidecarServer
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
_MAX_HEADER_NAMES: Final = 1024


class _BodyRefused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def _json_response(
    status: int, reason: str, detail: str, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    out = {REQUEST_ID_HEADER: request_id, **(headers or {})}
    return web.Response(status=status, body=body, content_type="application/json", headers=out)


def _denial(exc: InvalidToken, request_id: str) -> web.Response:
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


def _request_id(request: web.BaseRequest) -> str:
    request_id = request.headers.get(REQUEST_ID_HEADER, "")
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
        # Set on SIGTERM once the listening socket is closed: every answer then says
        # ``Connection: close``, so clients open their next connection to the replacement.
        self.draining = False
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The aiohttp low-level handler."""
        try:
            target = parse_target(request.raw_path, self.config.max_url_bytes)
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
            if self.draining and not response.prepared:
                response.force_close()
            return response
        finally:
            self.metrics.active_requests.dec()
            method = request.method if request.method in KNOWN_METHODS else "_OTHER"
            self.metrics.observe_request(method, status, time.perf_counter() - start)

    async def handle_metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        """The metrics listener's handler: ``GET /metrics/sidecar`` and nothing else."""
        if request.path != METRICS_PATH or request.method not in ("GET", "HEAD"):
            return _json_response(404, "not_found", "Not found.", _request_id(request))
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        inbound = request.headers
        request_id = _request_id(request)
        if self.shutting_down:
            return _json_response(503, "shutting_down", "The service is restarting.", request_id)
        if len(request.raw_headers) > self.config.max_headers:
            self.metrics.rejected_requests.labels("too_many_headers").inc()
            detail = f"Send at most {self.config.max_headers} header fields."
            return _json_response(431, "too_many_headers", detail, request_id)
        if sum(len(k) + len(v) + 4 for k, v in request.raw_headers) > self.config.max_header_bytes:
            auth = inbound.getall("Authorization", [])
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
                principal, token = await self._authenticate(inbound)
            except InvalidToken as exc:
                return _denial(exc, request_id)
        body: bytes | None = None
        if request.body_exists:
            try:
                body = await self._read_body(request)
            except _BodyRefused as exc:
                self.metrics.rejected_requests.labels(exc.reason).inc()
                response = _json_response(exc.status, exc.reason, exc.detail, request_id)
                response.force_close()  # the rest of the body is not worth waiting for
                return response
        head = self._upstream_head(request, principal, token, request_id, body)
        return await self._forward(request, head, body, request_id)

    async def _authenticate(self, inbound: CIMultiDictProxy[str]) -> tuple[Principal | None, str | None]:
        values = inbound.getall("Authorization", [])
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
        request: web.BaseRequest,
        principal: Principal | None,
        token: str | None,
        request_id: str,
        body: bytes | None,
    ) -> bytes:
        """The request line and headers sent to the app, as bytes ready to write.

        The target is the client's, already checked to be origin-form (:func:`parse_target`); the
        headers are the client's minus those dropped here, plus the sidecar's own. Values arrive
        from aiohttp's parser, which refuses CR and LF in them, so none can start another header.
        """
        inbound = request.headers
        listed = (
            {name.strip().lower() for value in inbound.getall("Connection") for name in value.split(",")}
            if "Connection" in inbound
            else None
        )
        lines = [f"{request.method} {request.raw_path} HTTP/1.1\r\n"]
        for name, value in inbound.items():
            if self._drops(name) or (listed and name.lower() in listed):
                continue
            lines.append(f"{name}: {value}\r\n")
        if "Host" not in inbound:
            lines.append(f"Host: {self._host}\r\n")
        if principal is not None and token is not None:
            lines.append(f"Authorization: Bearer {token}\r\n")
            for name, value in self._signer.sign(principal, token).items():
                lines.append(f"{name}: {value}\r\n")
        peer = request.remote or ""
        forwarded_for = ", ".join(inbound.getall("X-Forwarded-For", []))
        proto = request.scheme
        if self.config.trusted_proxies and _is_trusted(peer, self.config.trusted_proxies):
            claimed = inbound.get("X-Forwarded-Proto", "").lower()
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

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The whole request body, read before the app is involved (as nginx buffers requests).

        An app worker is taken only once the body is here: a client dribbling its body ties up a
        coroutine of the sidecar (for at most ``body_timeout``), never a gunicorn worker. A chunked
        body is counted as it arrives, so it cannot exceed the cap either.
        """
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            # The headers passed every check: the client may send the body now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        limit = self.config.max_body_bytes
        length = request.content_length
        try:
            async with asyncio.timeout(self.config.body_timeout):
                if length is not None:
                    return await request.content.readexactly(length)
                buffer = bytearray()
                async for chunk in request.content.iter_any():
                    buffer += chunk
                    if len(buffer) > limit:
                        raise _BodyRefused(413, "body_too_large", "The request body is too large.")
                return bytes(buffer)
        except TimeoutError:
            raise _BodyRefused(
                408, "body_timeout", f"The request body did not arrive within {self.config.body_timeout:g} s."
            ) from None
        except (asyncio.IncompleteReadError, web.RequestPayloadError, ConnectionError):
            raise _BodyRefused(
                400, "body_incomplete", "The request body ended early or is malformed."
            ) from None

    async def _forward(
        self, request: web.BaseRequest, head: bytes, body: bytes | None, request_id: str
    ) -> web.StreamResponse:
        assert self._pool is not None, "start() was not awaited"  # noqa: S101 - programming error
        # A pooled connection the app just closed or reset (a worker recycled, stopping or killed)
        # fails before the app read anything: a request without a body can safely be tried once
        # more on a fresh connection. So can one the app deduplicates (an Idempotency-Key, as Go's
        # net/http decides too) if its body is small: the buffered bytes are sent again as they are.
        replayable = body is None or (len(body) <= _BUFFER_LIMIT and "Idempotency-Key" in request.headers)
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
        try:
            return await self._relay(request, upstream, request_id)
        finally:
            upstream.release()

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

    def _upstream_error(self, kind: str, status: int, request_id: str, retry_after: int = 5) -> web.Response:
        self.metrics.upstream_errors.labels(kind).inc()
        log.warning("upstream %s: %s", kind, self.config.upstream)
        retry = {"Retry-After": str(retry_after)} if status == 503 else None
        return _json_response(
            status, "upstream_unavailable", "The service is unavailable, retry shortly.", request_id, retry
        )

    async def _relay(
        self, request: web.BaseRequest, upstream: Response, request_id: str
    ) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict(upstream.headers)  # hop-by-hop ones already gone
        headers.setdefault(REQUEST_ID_HEADER, request_id)
        length = upstream.content_length
        bodiless = request.method == "HEAD" or upstream.status in (204, 304)
        head = b""
        if not bodiless and (length is None or length <= _BUFFER_LIMIT):
            # Most API answers are small, often chunked (no Content-Length): buffer up to the
            # limit and answer in one write; only larger bodies are streamed.
            try:
                head = await upstream.read_up_to(_BUFFER_LIMIT + 1)
            except UpstreamError as exc:
                return self._upstream_error(
                    exc.kind, 504 if isinstance(exc, UpstreamTimeout) else 502, request_id
                )
            if len(head) <= _BUFFER_LIMIT and upstream.at_eof():
                headers.popall("Content-Length", None)
                return web.Response(
                    status=upstream.status, reason=upstream.reason, headers=headers, body=head
                )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if self.draining:
            response.force_close()
        try:
            await response.prepare(request)
            if head:
                await response.write(head)
            if not bodiless:
                async for chunk in upstream.iter_chunks():
                    await response.write(chunk)
            await response.write_eof()
        except (UpstreamError, ConnectionResetError):
            # Headers are gone already (or the client left): the only signal left is a cut connection.
            self.metrics.upstream_errors.labels("stream").inc()
            if request.transport is not None:
                request.transport.close()
        return response


def create_server(sidecar: Sidecar) -> web.Server:
    """An aiohttp low-level server running ``sidecar.handle`` (parser limits from the config)."""
    config = sidecar.config
    # The parser's header-field limit is generous on purpose: the handler enforces the real cap and
    # answers it in JSON (an oversized token as 401 too_large, other headers as 431). A request line
    # far too long is the parser's to refuse (SidecarServer answers 414 in JSON); the line holds the
    # method and version too, the handler enforces the target's own length exactly.
    max_line = config.max_url_bytes + 64
    max_field = max(8190, max(config.max_header_bytes, config.max_token_bytes) * 4)
    return SidecarServer(
        sidecar.handle,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("meshauth.sidecar.access"),
        max_line_size=max_line,
        # Distinct from max_line_size: the overflowing limit tells a long target from a long header.
        max_field_size=max_field if max_field != max_line else max_field + 1,
        # The handler counts exactly (the parser's count is off by its own bookkeeping); far above
        # the cap, the parser stops reading and SidecarServer answers the same 431.
        max_headers=config.max_headers * 2,
    )


def create_metrics_server(sidecar: Sidecar) -> web.Server:
    """The metrics listener: ``/metrics/sidecar`` for Prometheus, on its own port (no access log)."""
    return SidecarServer(sidecar.handle_metrics, access_log=None)
