"""The auth sidecar: verify, strip, sign, forward. One instance per pod, in front of gunicorn.

Per request:

1. ``/metrics/sidecar`` is answered here (the sidecar's own registry); nothing else is.
2. Requests with more header bytes than ``max_header_bytes`` get 431, bodies over
   ``max_body_bytes`` get 413, before anything reaches the app.
3. Every inbound identity header is dropped (:func:`meshauth.headers.is_identity_header`).
4. On a public path (``MESHAUTH_PUBLIC_PATHS``, prefix match on whole segments) the request is
   forwarded anonymously without looking at ``Authorization`` (which is dropped), so probes never
   depend on tokens or on identity.
5. Elsewhere, a bearer token is verified: invalid -> 401 JSON with ``WWW-Authenticate`` (503 while
   the keys are unavailable), never forwarded; valid -> forwarded with the signed principal headers
   and the ``Authorization`` header (the app may need the token for profile lookups).
   No token -> forwarded anonymously, without principal headers: the app decides per view.
6. ``X-Request-ID`` is kept when sane, generated otherwise, and echoed on the response;
   ``X-Forwarded-For`` gets the peer appended, ``X-Forwarded-Proto`` is kept or set.

Bodies stream both ways; upstream connections are pooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from meshauth.errors import InvalidToken
from meshauth.headers import bearer_token, is_identity_header, sign_principal
from meshauth.jwks import default_cache_file
from meshauth.principal import Principal
from meshauth.sidecar.config import SidecarConfig
from meshauth.sidecar.logging import AccessLogger
from meshauth.sidecar.metrics import SidecarMetrics
from meshauth.verifier import Verifier

__all__ = ["METRICS_PATH", "Sidecar"]

log = logging.getLogger("meshauth.sidecar")

METRICS_PATH: Final = "/metrics/sidecar"
# Probe and scrape traffic would drown the signal in the request metrics and the access log.
UNMEASURED_PREFIXES: Final = ("/livez", "/readyz", "/metrics")
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
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
# Set by the sidecar itself: the inbound values are replaced, not passed along.
_REPLACED: Final = frozenset({"authorization", "x-request-id", "x-forwarded-for", "x-forwarded-proto"})
_SAFE_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BUFFER_LIMIT: Final = 65_536
_CHUNK: Final = 65_536


class _BodyTooLarge(Exception):
    pass


def _json_response(
    status: int, reason: str, detail: str, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    out = {"X-Request-ID": request_id, **(headers or {})}
    return web.Response(status=status, body=body, content_type="application/json", headers=out)


def _denial(exc: InvalidToken, request_id: str) -> web.Response:
    if exc.reason == "jwks_unavailable":
        # The token may be fine: a 401 would make the client log in again for nothing.
        return _json_response(503, exc.reason, exc.detail, request_id, {"Retry-After": "5"})
    return _json_response(
        401, exc.reason, exc.detail, request_id, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def _is_under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


class Sidecar:
    """The proxy's state (config, verifier, upstream pool, metrics) and its request handler."""

    def __init__(self, config: SidecarConfig, metrics: SidecarMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or SidecarMetrics()
        self.verifier = Verifier(
            issuer=config.issuer,
            audience=config.audience,
            jwks_url=config.jwks_url,
            algorithms=config.algorithms,
            leeway=config.leeway,
            max_token_bytes=config.max_token_bytes,
            jwks_ttl=config.jwks_ttl,
            jwks_min_refresh_interval=config.jwks_min_refresh_interval,
            jwks_max_staleness=config.jwks_max_staleness,
            http_timeout=config.http_timeout,
            # A restarted sidecar starts with the last good keys, even while identity is down.
            jwks_cache_file=config.jwks_cache_file or default_cache_file(config.jwks_url),
            metrics=self.metrics.auth,
            mode="sidecar",
        )
        jwks = self.verifier.jwks
        # Age at scrape time, not at the last verification.
        self.metrics.auth.jwks_age.set_function(lambda: jwks.age() or 0.0)
        self.upstream = URL(config.upstream)
        self.shutting_down = False
        # Set on SIGTERM once the listening socket is closed: every answer then says
        # ``Connection: close``, so clients open their next connection to the replacement.
        self.draining = False
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream pool and load the JWKS (a failure is logged; requests then get 503)."""
        connector = aiohttp.TCPConnector(
            limit=self.config.upstream_connections,
            # Below gunicorn's keep-alive (5 s), so we never reuse a connection it is closing.
            keepalive_timeout=4.0,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.config.http_timeout, sock_read=self.config.upstream_timeout
            ),
            # Forward what the client sent, not what aiohttp would add.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if not await asyncio.to_thread(self.verifier.jwks.refresh):
            log.warning("JWKS not loaded at start; tokens get 503 until identity answers")
        self._refresher = asyncio.create_task(self._refresh_jwks())

    async def close(self) -> None:
        """Stop the refresher and close the upstream pool."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._session is not None:
            await self._session.close()
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
        path = request.path
        if path == METRICS_PATH:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        if path.startswith(UNMEASURED_PREFIXES):
            return await self._serve(request, path)
        start = time.perf_counter()
        self.metrics.active_requests.inc()
        status = 500
        try:
            response = await self._serve(request, path)
            status = response.status
            if self.draining and not response.prepared:
                response.force_close()
            return response
        finally:
            self.metrics.active_requests.dec()
            method = request.method if request.method in KNOWN_METHODS else "_OTHER"
            self.metrics.request_duration.labels(method, str(status)).observe(time.perf_counter() - start)

    async def _serve(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        inbound = request.headers
        request_id = inbound.get("X-Request-ID", "")
        if not _SAFE_REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        if self.shutting_down:
            return _json_response(503, "shutting_down", "The service is restarting.", request_id)
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
        if not _is_under(path, self.config.public_paths):
            try:
                principal, token = await self._authenticate(inbound)
            except InvalidToken as exc:
                return _denial(exc, request_id)
        return await self._forward(
            request, self._upstream_headers(request, principal, token, request_id), request_id
        )

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

    def _upstream_headers(
        self, request: web.BaseRequest, principal: Principal | None, token: str | None, request_id: str
    ) -> CIMultiDict[str]:
        inbound = request.headers
        listed = {
            name.strip().lower() for value in inbound.getall("Connection", []) for name in value.split(",")
        }
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in inbound.items():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or lowered in listed or lowered in _REPLACED or is_identity_header(name):
                continue
            out.add(name, value)
        if principal is not None and token is not None:
            out["Authorization"] = f"Bearer {token}"
            out.update(sign_principal(principal, self.config.principal_secret))
        out["X-Request-ID"] = request_id
        peer = request.remote or ""
        forwarded_for = ", ".join(inbound.getall("X-Forwarded-For", []))
        out["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        proto = inbound.get("X-Forwarded-Proto", "").lower()
        out["X-Forwarded-Proto"] = proto if proto in ("http", "https") else request.scheme
        return out

    async def _body(self, request: web.BaseRequest) -> AsyncIterator[bytes]:
        # Streams the body through, counting, so a chunked upload cannot exceed the cap either.
        seen = 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            seen += len(chunk)
            if seen > self.config.max_body_bytes:
                raise _BodyTooLarge
            yield chunk

    async def _forward(
        self, request: web.BaseRequest, headers: CIMultiDict[str], request_id: str
    ) -> web.StreamResponse:
        assert self._session is not None, "start() was not awaited"  # noqa: S101 - programming error
        url = self.upstream.join(URL(request.rel_url.raw_path_qs, encoded=True))
        has_body = request.body_exists
        # A pooled connection the app just closed (a worker recycled or stopping) fails before the
        # app read anything: a request without a body can safely be tried once more on a fresh
        # connection. So can one the app deduplicates (an Idempotency-Key, as Go's net/http
        # decides too) if its body is small enough to keep for the second try.
        replayable: bytes | None = None
        length = request.content_length
        small = length is not None and length <= min(_BUFFER_LIMIT, self.config.max_body_bytes)
        if has_body and small and "Idempotency-Key" in request.headers:
            replayable = await request.read()
        attempts = 2 if not has_body or replayable is not None else 1
        for attempt in range(attempts):
            if replayable is not None:
                data: Any = replayable
            else:
                data = self._body(request) if has_body else None
            try:
                upstream = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    compress=None,
                )
                break
            except aiohttp.ServerDisconnectedError:
                if attempt == attempts - 1:
                    return self._upstream_error("disconnected", 502, request_id)
            except _BodyTooLarge:
                self.metrics.rejected_requests.labels("body_too_large").inc()
                return _json_response(413, "body_too_large", "The request body is too large.", request_id)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                return self._upstream_error("timeout", 504, request_id)
            except aiohttp.ClientError as exc:
                if isinstance(exc.__cause__, _BodyTooLarge) or isinstance(exc.__context__, _BodyTooLarge):
                    self.metrics.rejected_requests.labels("body_too_large").inc()
                    return _json_response(413, "body_too_large", "The request body is too large.", request_id)
                # Nothing listens: the app is down or restarting, which is a 503 (as Envoy answers),
                # not a bad gateway; clients and load balancers retry a 503.
                return self._upstream_error("connect", 503, request_id)
        try:
            return await self._relay(request, upstream, request_id)
        finally:
            upstream.release()

    def _upstream_error(self, kind: str, status: int, request_id: str) -> web.Response:
        self.metrics.upstream_errors.labels(kind).inc()
        log.warning("upstream %s: %s", kind, self.upstream)
        retry = {"Retry-After": "5"} if status == 503 else None
        return _json_response(
            status, "upstream_unavailable", "The service is unavailable, retry shortly.", request_id, retry
        )

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, request_id: str
    ) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                headers.add(name, value)
        headers.setdefault("X-Request-ID", request_id)
        length = upstream.content_length
        bodiless = request.method == "HEAD" or upstream.status in (204, 304)
        head = b""
        if not bodiless and (length is None or length <= _BUFFER_LIMIT):
            # Most API answers are small, often chunked (no Content-Length): buffer up to the
            # limit and answer in one write; only larger bodies are streamed.
            try:
                head = await _read_up_to(upstream, _BUFFER_LIMIT + 1)
            except (TimeoutError, aiohttp.ClientError):
                return self._upstream_error("read", 502, request_id)
            if len(head) <= _BUFFER_LIMIT and upstream.content.at_eof():
                headers.popall("Content-Length", None)
                status, reason = upstream.status, upstream.reason
                return web.Response(status=status, reason=reason, headers=headers, body=head)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if self.draining:
            response.force_close()
        try:
            await response.prepare(request)
            if head:
                await response.write(head)
            if not bodiless:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            await response.write_eof()
        except (TimeoutError, aiohttp.ClientError, ConnectionResetError):
            # Headers are gone already (or the client left): the only signal left is a cut connection.
            self.metrics.upstream_errors.labels("stream").inc()
            if request.transport is not None:
                request.transport.close()
        return response


async def _read_up_to(upstream: aiohttp.ClientResponse, limit: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = await upstream.content.read(limit - len(buffer))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


def create_server(sidecar: Sidecar) -> web.Server:
    """An aiohttp low-level server running ``sidecar.handle`` (parser limits from the config)."""
    # The parser's own limits are generous on purpose: the handler enforces the real caps and answers
    # them in JSON (an oversized token as 401 too_large, other headers as 431).
    limit = max(sidecar.config.max_header_bytes, sidecar.config.max_token_bytes) * 4
    return web.Server(
        sidecar.handle,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("meshauth.sidecar.access"),
        max_line_size=max(8190, limit),
        max_field_size=max(8190, limit),
    )
