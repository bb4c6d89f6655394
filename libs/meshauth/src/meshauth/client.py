"""Service-to-service HTTP calls with a service token (client-credentials grant at identity).

Timeouts on every call; retries with exponential backoff and full jitter for idempotent requests on
connection errors and 502/503/504; ``X-Request-ID`` propagation; one cached token per audience.

A service that let a call time out is not called again for ``timeout_cooldown`` seconds: those calls
fail at once with :class:`httpx.ConnectError` (nothing was sent). Without that, every worker of the
caller waits out the read timeout on each call to a frozen service while its own clients queue
behind them; with it, the caller answers them at once (orders: a 503, nothing reserved).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

import httpx

from meshauth import context
from meshauth.metrics import client_request_duration
from meshauth.settings import environ_source, read
from meshcontract import REQUEST_ID_HEADER, valid_request_id

__all__ = ["IDEMPOTENT_METHODS", "RETRY_STATUSES", "ServiceClient", "ServiceTokenError"]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES: Final = frozenset({502, 503, 504})
# Errors where the request may not have been processed: safe to repeat an idempotent request.
_RETRY_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
TOKEN_PATH: Final = "/api/v1/auth/service-token"  # noqa: S105 - a URL path


class ServiceTokenError(Exception):
    """identity did not hand out a service token (bad credentials, unknown audience, identity down)."""


class ServiceClient:
    """A synchronous HTTP client that authenticates as this service.

    ``target`` URLs are absolute; ``audience`` names the service called (the token's ``aud``).
    Thread-safe; keep one per process and :meth:`close` it at exit.
    """

    def __init__(
        self,
        *,
        identity_url: str,
        client_id: str,
        client_secret: str,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        token_refresh_margin: float = 30.0,
        timeout_cooldown: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not identity_url or not client_id or not client_secret:
            raise ValueError("identity_url, client_id and client_secret are required")
        self.identity_url = identity_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.token_refresh_margin = token_refresh_margin
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_lock = threading.Lock()
        self.timeout_cooldown = timeout_cooldown
        self._timed_out_until: dict[str, float] = {}  # target -> not called again before (monotonic)

    @classmethod
    def from_env(cls, **options: Any) -> ServiceClient:
        """A client from ``MESHAUTH_IDENTITY_URL``, ``MESHAUTH_CLIENT_ID`` and ``MESHAUTH_CLIENT_SECRET``."""
        source = environ_source()
        return cls(
            identity_url=read(source, "MESHAUTH_IDENTITY_URL"),
            client_id=read(source, "MESHAUTH_CLIENT_ID"),
            client_secret=read(source, "MESHAUTH_CLIENT_SECRET"),
            **options,
        )

    # -- tokens -----------------------------------------------------------------------------------

    def token(self, audience: str) -> str:
        """A service token for ``audience``, from the cache until shortly before it expires."""
        with self._token_lock:
            cached = self._tokens.get(audience)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            token, expires_in = self._fetch_token(audience)
            # Refresh before expiry: a token must not expire between here and the callee's check.
            margin = min(self.token_refresh_margin, expires_in / 2)
            self._tokens[audience] = (token, time.monotonic() + expires_in - margin)
            return token

    def forget_token(self, audience: str) -> None:
        """Drop the cached token for ``audience`` (the next call fetches a new one)."""
        with self._token_lock:
            self._tokens.pop(audience, None)

    def _fetch_token(self, audience: str) -> tuple[str, float]:
        body = {"client_id": self.client_id, "client_secret": self._client_secret, "audience": audience}
        try:
            response = self._send(
                "POST", self.identity_url + TOKEN_PATH, target="identity", idempotent=True, json=body
            )
        except httpx.HTTPError as exc:
            raise ServiceTokenError(f"identity unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ServiceTokenError(f"identity refused a token for {audience!r}: HTTP {response.status_code}")
        try:
            data = response.json()
            token, expires_in = data["access_token"], float(data["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceTokenError(f"unexpected token response: {exc}") from exc
        if not isinstance(token, str) or not token or expires_in <= 0:
            raise ServiceTokenError("unexpected token response")
        return token, expires_in

    # -- requests ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        audience: str,
        idempotent: bool | None = None,
        request_id: str | None = None,
        as_user: bool | str = False,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send ``method url`` to the service ``audience`` and return the response (any status).

        ``idempotent`` defaults to the method's nature (GET/HEAD/PUT/DELETE/OPTIONS); pass True for
        a POST the callee deduplicates. ``request_id`` defaults to the current request's.
        ``as_user=True`` sends the current request's bearer token instead of a service token (the
        callee then sees the end user); a string sends that token. Other keyword arguments go to
        :meth:`httpx.Client.request` (``json``, ``params``, ``content``, ``timeout``...).
        Raises :class:`httpx.HTTPError` when the service cannot be reached after the retries.
        """
        method = method.upper()
        retry = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        outbound = dict(headers or {})
        outbound[REQUEST_ID_HEADER] = self._request_id(request_id)
        user_token = self._user_token(as_user)
        outbound["Authorization"] = f"Bearer {user_token or self.token(audience)}"
        response = self._send(method, url, target=audience, idempotent=retry, headers=outbound, **kwargs)
        if response.status_code == 401 and user_token is None:
            # The cached token may have been signed by a key identity has since withdrawn: renew once.
            response.close()
            self.forget_token(audience)
            outbound["Authorization"] = f"Bearer {self.token(audience)}"
            response = self._send(method, url, target=audience, idempotent=retry, headers=outbound, **kwargs)
        return response

    def get(self, url: str, *, audience: str, **kwargs: Any) -> httpx.Response:
        """``GET`` (retried)."""
        return self.request("GET", url, audience=audience, **kwargs)

    def post(self, url: str, *, audience: str, **kwargs: Any) -> httpx.Response:
        """``POST`` (retried only with ``idempotent=True``)."""
        return self.request("POST", url, audience=audience, **kwargs)

    def put(self, url: str, *, audience: str, **kwargs: Any) -> httpx.Response:
        """``PUT`` (retried)."""
        return self.request("PUT", url, audience=audience, **kwargs)

    def patch(self, url: str, *, audience: str, **kwargs: Any) -> httpx.Response:
        """``PATCH`` (retried only with ``idempotent=True``)."""
        return self.request("PATCH", url, audience=audience, **kwargs)

    def delete(self, url: str, *, audience: str, **kwargs: Any) -> httpx.Response:
        """``DELETE`` (retried)."""
        return self.request("DELETE", url, audience=audience, **kwargs)

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _request_id(explicit: str | None) -> str:
        for candidate in (explicit, context.current().request_id):
            if candidate and valid_request_id(candidate):
                return candidate
        return uuid.uuid4().hex

    @staticmethod
    def _user_token(as_user: bool | str) -> str | None:
        if isinstance(as_user, str):
            return as_user
        if not as_user:
            return None
        token = context.current().token
        if not token:
            raise ValueError("as_user=True outside a request authenticated with a bearer token")
        return token

    def _send(self, method: str, url: str, *, target: str, idempotent: bool, **kwargs: Any) -> httpx.Response:
        start = time.perf_counter()
        attempts = self.retries + 1 if idempotent else 1
        outcome = "error"
        try:
            if time.monotonic() < self._timed_out_until.get(target, 0.0):
                outcome = "cooling_down"
                raise httpx.ConnectError(
                    f"{target} let a call time out less than {self.timeout_cooldown:g} s ago; not called",
                    request=self._http.build_request(method, url),
                )
            for attempt in range(attempts):
                last = attempt == attempts - 1
                try:
                    response = self._http.request(method, url, **kwargs)
                except httpx.TimeoutException as exc:
                    outcome = "timeout"
                    if not isinstance(exc, httpx.ConnectTimeout):
                        # Connected but no answer: the service is stuck, not gone. Give it a rest.
                        self._timed_out_until[target] = time.monotonic() + self.timeout_cooldown
                    if last or not isinstance(exc, _RETRY_ERRORS):
                        raise
                except _RETRY_ERRORS:
                    outcome = "connection_error"
                    if last:
                        raise
                else:
                    outcome = f"{response.status_code // 100}xx"
                    if last or response.status_code not in RETRY_STATUSES:
                        return response
                    response.close()
                self._sleep(attempt)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            client_request_duration().labels(target, outcome).observe(time.perf_counter() - start)

    def _sleep(self, attempt: int) -> None:
        # Full jitter: callers that failed together do not retry together.
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not cryptography
