"""catalog's reservation API, called with a service token through meshauth's ServiceClient.

All three calls are safe to repeat (catalog deduplicates on the reservation id), so they are sent
as idempotent: the client retries connection errors and 502/503/504 with backoff. What comes back
is sorted into three kinds of failure, because each asks orders for a different recovery:

- :class:`CatalogNotReached`: the request never reached catalog (no token, connection refused):
  nothing can have been reserved.
- :class:`CatalogUnavailable`: catalog may or may not have acted (timeout, broken connection, 5xx).
- :class:`CatalogRejected`: catalog answered 4xx: a definite "no" that changed nothing.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from django.conf import settings

from meshauth.client import ServiceClient, ServiceTokenError

AUDIENCE = "catalog"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


class CatalogError(Exception):
    """catalog failed in a way orders cannot explain to the customer (bad answer, HTTP 500)."""


class CatalogUnavailable(CatalogError):
    """No usable answer; catalog may have acted on the request."""


class CatalogNotReached(CatalogUnavailable):
    """The request never got to catalog."""


class CatalogRejected(CatalogError):
    """catalog answered 4xx and changed nothing."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class CatalogClient:
    def __init__(self, base_url: str, service_client: Callable[[], ServiceClient]) -> None:
        self.base_url = base_url.rstrip("/")
        self.service_client = service_client

    def reserve(self, reservation_id: uuid.UUID, items: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"reservation_id": str(reservation_id), "items": items}
        return self._post("/api/v1/reservations", body)

    def commit(self, reservation_id: uuid.UUID) -> dict[str, Any]:
        return self._post(f"/api/v1/reservations/{reservation_id}/commit", None)

    def release(self, reservation_id: uuid.UUID) -> dict[str, Any]:
        return self._post(f"/api/v1/reservations/{reservation_id}/release", None)

    def _post(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            http = self.service_client()
        except ValueError as exc:
            # Missing MESHAUTH_CLIENT_ID/SECRET/IDENTITY_URL: orders cannot call catalog at all.
            raise CatalogNotReached(f"orders has no service credentials: {exc}") from exc
        try:
            response = http.post(self.base_url + path, audience=AUDIENCE, idempotent=True, json=body)
        except ServiceTokenError as exc:
            raise CatalogNotReached(f"no service token: {exc}") from exc
        except _NOT_SENT as exc:
            raise CatalogNotReached(f"cannot connect: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise CatalogUnavailable(f"{type(exc).__name__}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if 400 <= response.status_code < 500:
            raise CatalogRejected(response.status_code, data if isinstance(data, dict) else {})
        if response.status_code in (502, 503, 504):
            raise CatalogUnavailable(f"HTTP {response.status_code}")
        if response.status_code >= 300 or not isinstance(data, dict):
            raise CatalogError(f"unexpected answer: HTTP {response.status_code}")
        return data


@functools.cache
def _service_client(timeout: float) -> ServiceClient:
    # One per process: it pools connections and caches the service token (it is thread-safe).
    return ServiceClient.from_env(read_timeout=timeout, connect_timeout=min(2.0, timeout), retries=2)


def catalog_client() -> CatalogClient:
    """The catalog client, configured from settings and meshauth's environment (MESHAUTH_CLIENT_*)."""
    timeout = settings.ORDERS_CATALOG_TIMEOUT
    return CatalogClient(settings.ORDERS_CATALOG_URL, lambda: _service_client(timeout))
