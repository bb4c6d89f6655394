"""``MESHAUTH_MODE=introspect``: ask identity about every token, as the talk's decorator did.

It exists as the benchmark's anchor (``make bench``) and for callers that must see a revocation
the moment it happens. It costs a network round trip per request and fails when identity is down,
which is exactly what the ``inprocess`` and ``sidecar`` modes avoid.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from meshauth.client import ServiceClient
from meshauth.django.conf import get_settings
from meshauth.errors import InvalidToken
from meshauth.metrics import default_metrics
from meshauth.principal import USER_TOKEN_USE, Principal

__all__ = ["introspect"]

_client: ServiceClient | None = None
_lock = threading.Lock()


def _service_client() -> ServiceClient:
    global _client
    with _lock:
        if _client is None:
            conf = get_settings()
            _client = ServiceClient(
                identity_url=conf.identity_url,
                client_id=conf.client_id,
                client_secret=conf.client_secret,
                token_cache_dir=conf.token_cache_dir or None,
            )
        return _client


def introspect(token: str, identity_url: str) -> Principal:
    """The principal identity vouches for, or ``InvalidToken`` when it says the token is not active."""
    try:
        response = _service_client().post(
            f"{identity_url}/api/v1/auth/introspect",
            audience="identity",
            json={"token": token},
            idempotent=True,
        )
    except httpx.HTTPError as exc:
        raise InvalidToken("jwks_unavailable", f"identity did not answer: {exc}") from None
    if response.status_code != 200:
        raise InvalidToken("jwks_unavailable", f"identity answered {response.status_code}")
    answer: dict[str, Any] = response.json()
    if not answer.get("active"):
        default_metrics().decision("rejected", "inactive", "introspect")
        raise InvalidToken("bad_signature", "identity says the token is not active")
    default_metrics().decision("accepted", "", "introspect")
    scope = str(answer.get("scope") or "")
    subject = str(answer["user_id"])
    claims = {"sub": subject, "scope": scope, "token_use": USER_TOKEN_USE, "introspected": True}
    return Principal(kind="user", subject=subject, scopes=frozenset(scope.split()), claims=claims)
