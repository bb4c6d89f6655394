"""The caller's profile from identity (``GET {MESHAUTH_IDENTITY_URL}/api/v1/me``), cached briefly.

Only views decorated with ``login_required(profile=True)`` pay for it; the cache (keyed by a hash
of the token, bounded, a few seconds) makes a burst of requests from one user cost one call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any, Final

import httpx

from meshauth.django.conf import get_settings, on_reset

__all__ = ["PROFILE_PATH", "ProfileUnavailable", "fetch_profile"]

PROFILE_PATH: Final = "/api/v1/me"
_MAX_ENTRIES: Final = 4096


class ProfileUnavailable(Exception):
    """identity did not return the profile; ``status`` is what the view should answer (401 or 503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_lock = threading.Lock()
_cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            timeout = get_settings().http_timeout
            _client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
        return _client


def fetch_profile(token: str) -> dict[str, Any]:
    """The profile identity returns for ``token``; raises :class:`ProfileUnavailable`."""
    conf = get_settings()
    key = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    with _lock:
        entry = _cache.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
    if not conf.identity_url:
        raise ProfileUnavailable(503, "The profile service is not configured.")
    try:
        response = _http().get(conf.identity_url + PROFILE_PATH, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        raise ProfileUnavailable(503, "The profile service is unavailable.") from None
    if response.status_code in (401, 403):
        raise ProfileUnavailable(401, "identity rejected the token.")
    if response.status_code != 200:
        raise ProfileUnavailable(503, "The profile service is unavailable.")
    try:
        profile = response.json()
    except ValueError:
        raise ProfileUnavailable(503, "The profile service answered garbage.") from None
    if not isinstance(profile, dict):
        raise ProfileUnavailable(503, "The profile service answered garbage.")
    with _lock:
        if len(_cache) >= _MAX_ENTRIES:
            _cache.popitem(last=False)
        _cache[key] = (now + conf.profile_cache_seconds, profile)
    return profile


def _reset() -> None:
    global _client
    with _lock:
        _cache.clear()
        old, _client = _client, None
    if old is not None:
        old.close()


on_reset(_reset)
