"""identity's public keys, fetched over HTTP and cached.

Rules, in order of importance:

* no network call on the hot path while the cache is fresh;
* at most one fetch per ``min_refresh_interval``, whatever triggers it (TTL expiry, a token with an
  unknown ``kid``, a failed fetch): a flood of random kids cannot turn into a flood on identity;
* when identity is unreachable, the last good keys keep working for up to ``max_staleness``;
* one fetch at a time per cache; other threads keep using the current keys meanwhile and only
  wait when there are no keys at all yet.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt

from meshauth.errors import InvalidToken
from meshauth.keys import ALGORITHMS
from meshauth.metrics import AuthMetrics

__all__ = ["JWKSCache", "VerificationKey"]

log = logging.getLogger("meshauth.jwks")

MAX_JWKS_BYTES: Final = 1_048_576
MIN_RSA_BITS: Final = 2048
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A parsed public key and the single algorithm it may verify."""

    kid: str
    algorithm: str
    key: Any


def parse_jwks(document: Any, algorithms: Iterable[str]) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWKS document; unusable entries are skipped with a warning."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be an object with a `keys` list")
    allowed = set(algorithms)
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        try:
            parsed = _parse_key(entry, allowed)
        except (ValueError, TypeError, jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            log.warning("skipping JWKS entry: %s", exc)
            continue
        if parsed.kid in keys:
            log.warning("skipping JWKS entry: duplicate kid %r", parsed.kid)
            continue
        keys[parsed.kid] = parsed
    return keys


def _parse_key(entry: Any, allowed: set[str]) -> VerificationKey:
    if not isinstance(entry, Mapping):
        raise ValueError("not an object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"kid {kid!r}: use is not sig")
    if _PRIVATE_MEMBERS & entry.keys():
        # A JWKS must never carry private or symmetric key material; refuse to build a key from it.
        raise ValueError(f"kid {kid!r}: private or symmetric key material")
    jwk = jwt.PyJWK(dict(entry))
    algorithm = jwk.algorithm_name
    if algorithm not in allowed:
        raise ValueError(f"kid {kid!r}: algorithm {algorithm} is not allowed")
    key_size = getattr(jwk.key, "key_size", None)
    if entry.get("kty") == "RSA" and (key_size is None or key_size < MIN_RSA_BITS):
        raise ValueError(f"kid {kid!r}: RSA key shorter than {MIN_RSA_BITS} bits")
    return VerificationKey(kid=kid, algorithm=algorithm, key=jwk.key)


class JWKSCache:
    """A thread-safe, rate-limited cache of the JWKS at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 30.0,
        max_staleness: float = 86_400.0,
        timeout: float = 2.0,
        algorithms: Iterable[str] = ALGORITHMS,
        metrics: AuthMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[], Any] | None = None,
    ) -> None:
        """``loader``, when given, returns the JWKS document instead of an HTTP GET of ``url``: the
        issuer itself (identity) reads its keys from its own database rather than calling itself."""
        if min_refresh_interval <= 0 or ttl < min_refresh_interval:
            raise ValueError("need 0 < min_refresh_interval <= ttl")
        if max_staleness < ttl:
            raise ValueError("max_staleness must be at least the TTL")
        self.url = url
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.max_staleness = max_staleness
        self.algorithms = tuple(algorithms)
        self.metrics = metrics
        self._clock = clock
        self._loader = loader
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._fetch_lock = threading.Lock()
        self._timeout = timeout
        #: Bumped whenever the key set changes, so verifiers can drop results cached under old keys.
        self.generation = 0

    # -- reading ----------------------------------------------------------------------------------

    def age(self) -> float | None:
        """Seconds since the last successful fetch, or None before the first one."""
        fetched = self._fetched_at
        return None if fetched is None else self._clock() - fetched

    def would_fetch(self, kid: str) -> bool:
        """True when :meth:`get` for ``kid`` could do network I/O now (lets async callers go off-loop)."""
        now = self._clock()
        if not self._is_fresh(now) or kid not in self._keys:
            last = self._last_attempt
            return last is None or now - last >= self.min_refresh_interval
        return False

    def get(self, kid: str) -> VerificationKey:
        """The key for ``kid``; raises ``InvalidToken`` (``unknown_kid`` or ``jwks_unavailable``)."""
        now = self._clock()
        found = self._keys.get(kid)
        if found is not None and self._is_fresh(now):
            return found
        self._refresh_if_allowed(wait=not self._keys)
        self.check_usable()
        found = self._keys.get(kid)
        if found is None:
            raise InvalidToken("unknown_kid")
        return found

    def check_usable(self) -> None:
        """Raise ``jwks_unavailable`` when there are no keys, or they are older than ``max_staleness``."""
        age = self.age()
        self._record_age(age)
        if age is None or age > self.max_staleness:
            raise InvalidToken("jwks_unavailable")

    def is_fresh(self) -> bool:
        """True while the keys are younger than the TTL."""
        return self._is_fresh(self._clock())

    def _is_fresh(self, now: float) -> bool:
        fetched = self._fetched_at
        return fetched is not None and now - fetched < self.ttl

    def _record_age(self, age: float | None) -> None:
        if self.metrics is not None and age is not None:
            self.metrics.jwks_age.set(age)

    # -- fetching ---------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch now if the rate limit allows (used by background refreshers); True on success."""
        return self._refresh_if_allowed(wait=True)

    def _refresh_if_allowed(self, *, wait: bool) -> bool:
        # Without keys a caller has nothing to fall back on, so it waits for the fetch in flight;
        # otherwise it carries on with the current keys.
        if not self._fetch_lock.acquire(blocking=wait, timeout=self._timeout * 2 + 1 if wait else -1):
            return False
        try:
            now = self._clock()
            last = self._last_attempt
            if last is not None and now - last < self.min_refresh_interval:
                return False
            self._last_attempt = now
            return self._fetch()
        finally:
            self._fetch_lock.release()

    def _fetch(self) -> bool:
        try:
            keys = parse_jwks(self._load_document(), self.algorithms)
            if not keys:
                raise ValueError("the JWKS holds no usable key")
        except (httpx.HTTPError, ValueError) as exc:
            self._count("failure")
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return False
        if keys.keys() != self._keys.keys():
            self.generation += 1
        self._keys = keys
        self._fetched_at = self._clock()
        self._record_age(0.0)
        self._count("success")
        return True

    def _load_document(self) -> Any:
        if self._loader is None:
            return self._download()
        try:
            return self._loader()
        except Exception as exc:  # noqa: BLE001 - a failing loader is a failed fetch, like HTTP's
            raise ValueError(f"JWKS loader failed: {exc}") from exc

    def _download(self) -> Any:
        with self._client.stream("GET", self.url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("the JWKS is too large")
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.jwks_refresh.labels(outcome).inc()

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
