"""identity's public keys, fetched over HTTP and cached.

The URL is ``http(s)://…``, or ``http+unix://<socket path, percent-encoded>/<path>`` for an app in
the same pod behind a unix socket (identity's own sidecar reads the keys from the gunicorn beside it:
``http+unix://%2Frun%2Fgunicorn%2Fapp.sock/.well-known/jwks.json``), the form of requests-unixsocket
and docker-py.

Rules, in order of importance:

* no network call on the hot path while the cache is fresh;
* at most one fetch per ``min_refresh_interval``, whatever triggers it (TTL expiry, a token with an
  unknown ``kid``, a failed fetch): a flood of random kids cannot turn into a flood on identity;
* when identity is unreachable, the last good keys keep working for up to ``max_staleness``;
* one fetch at a time per cache; other threads keep using the current keys meanwhile and only
  wait when there are no keys at all yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import jwt

from meshauth.errors import InvalidToken
from meshauth.keys import ALGORITHMS
from meshauth.metrics import AuthMetrics
from meshcontract import UNIX_HTTP_SCHEME, variable

__all__ = [
    "JWKSCache",
    "VerificationKey",
    "declared_default",
    "default_cache_file",
    "http_client",
]

log = logging.getLogger("meshauth.jwks")


def declared_default(name: str) -> float:
    """The runtime contract's default of the number variable ``name``: the constructors' defaults
    are the settings' defaults, declared once."""
    return float(variable(name).default or "nan")


# Defaults of the constructor for code that builds a cache without settings (tests, tools).
TTL: Final = declared_default("MESHAUTH_JWKS_TTL")
MIN_REFRESH_INTERVAL: Final = declared_default("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL")
MAX_STALENESS: Final = declared_default("MESHAUTH_JWKS_MAX_STALENESS")
HTTP_TIMEOUT: Final = declared_default("MESHAUTH_HTTP_TIMEOUT")
MAX_JWKS_BYTES: Final = 1_048_576
MIN_RSA_BITS: Final = 2048
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


def http_client(url: str, timeout: float) -> tuple[httpx.Client, str]:
    """A client for ``url`` and the URL to ask it: ``http+unix://`` URLs go over their socket (as
    ``http://localhost/<path>``); a socket path must be absolute."""
    if not url.startswith(UNIX_HTTP_SCHEME):
        return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False), url
    parts = urllib.parse.urlsplit(url)
    socket_path = urllib.parse.unquote(parts.netloc)
    if not socket_path.startswith("/"):
        raise ValueError(f"{url!r}: the socket path must be absolute and percent-encoded (%2Frun%2F…)")
    transport = httpx.HTTPTransport(uds=socket_path)
    client = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False)
    return client, urllib.parse.urlunsplit(("http", "localhost", parts.path or "/", parts.query, ""))


def default_cache_file(url: str) -> str:
    """Where the processes of one pod share the last good JWKS of ``url``: the temp dir (a pod's
    memory-backed /tmp), one file per JWKS URL."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"meshauth-jwks-{digest}.json")


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
        ttl: float = TTL,
        min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        max_staleness: float = MAX_STALENESS,
        timeout: float = HTTP_TIMEOUT,
        algorithms: Iterable[str] = ALGORITHMS,
        metrics: AuthMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[], Any] | None = None,
        cache_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``loader``, when given, returns the JWKS document instead of an HTTP GET of ``url``: the
        issuer itself (identity) reads its keys from its own database rather than calling itself.

        ``cache_file`` keeps the last good JWKS on disk (a pod's /tmp): every gunicorn worker, and
        every worker started later (``max_requests`` recycling), begins with the keys another one
        fetched, so a worker born while identity is down still verifies tokens.
        """
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
        self._client, self._request_url = http_client(url, timeout)
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._fetch_lock = threading.Lock()
        self._timeout = timeout
        #: Bumped whenever the key set changes, so verifiers can drop results cached under old keys.
        self.generation = 0
        self._document: Any = None
        self._fetched_wall: float | None = None
        self._cache_file = Path(cache_file) if cache_file else None
        self._load_cache_file()

    # -- reading ----------------------------------------------------------------------------------

    def age(self) -> float | None:
        """Seconds since the last successful fetch, or None before the first one."""
        fetched = self._fetched_at
        return None if fetched is None else self._clock() - fetched

    def keys(self) -> dict[str, VerificationKey]:
        """The current key set by kid (a copy), fresh or not; empty before the first fetch."""
        return dict(self._keys)

    def would_fetch(self, kid: str) -> bool:
        """True when :meth:`get` for ``kid`` could do network I/O now (lets async callers go off-loop)."""
        now = self._clock()
        if not self._is_fresh(now) or kid not in self._keys:
            last = self._last_attempt
            return last is None or now - last >= self._retry_interval()
        return False

    def _retry_interval(self) -> float:
        # With no keys at all every request fails until a fetch succeeds: retry within a second
        # (identity starting after us, a blip at boot) instead of refusing for a whole interval.
        # With keys, the full interval bounds what a flood of unknown kids can cost identity.
        return self.min_refresh_interval if self._keys else min(1.0, self.min_refresh_interval)

    def get(self, kid: str) -> VerificationKey:
        """The key for ``kid``; raises ``InvalidToken`` (``unknown_kid`` or ``jwks_unavailable``)."""
        now = self._clock()
        found = self._keys.get(kid)
        if found is not None and self._is_fresh(now):
            return found
        self._refresh_if_allowed(wait=not self._keys)
        if kid not in self._keys:
            # Rate-limited or identity unreachable: another worker of the pod may have the key.
            self._adopt_cache_file()
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
            if last is not None and now - last < self._retry_interval():
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
            return self._adopt_cache_file()
        if keys.keys() != self._keys.keys():
            self.generation += 1
        self._keys = keys
        self._fetched_at = self._clock()
        self._fetched_wall = time.time()
        self._record_age(0.0)
        self._count("success")
        self._save_cache_file()
        return True

    # -- the shared file ----------------------------------------------------------------------------

    def _load_cache_file(self) -> None:
        self._adopt_cache_file()

    def _adopt_cache_file(self) -> bool:
        """Take the pod's shared copy when it is newer than ours and not too stale; True if taken."""
        if self._cache_file is None:
            return False
        try:
            saved = json.loads(self._cache_file.read_text())
            fetched_wall = float(saved["fetched_at"])
            keys = parse_jwks(saved["jwks"], self.algorithms)
        except (OSError, ValueError, KeyError, TypeError):
            return False  # no file yet, or one we cannot trust: fetch as usual
        age = max(0.0, time.time() - fetched_wall)
        newer = self._fetched_wall is None or fetched_wall > self._fetched_wall
        if not (keys and newer and age <= self.max_staleness and saved.get("url") == self.url):
            return False
        if keys.keys() != self._keys.keys():
            self.generation += 1
        self._keys = keys
        self._fetched_at = self._clock() - age
        self._fetched_wall = fetched_wall
        self._document = saved["jwks"]
        return True

    def _save_cache_file(self) -> None:
        if self._cache_file is None or self._document is None:
            return
        payload = json.dumps({"url": self.url, "fetched_at": self._fetched_wall, "jwks": self._document})
        try:
            # Write then rename: a worker reading at the same moment sees the old file or the new one.
            fd, tmp = tempfile.mkstemp(dir=self._cache_file.parent, prefix=".jwks-")
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
            os.replace(tmp, self._cache_file)
        except OSError as exc:
            log.warning("cannot write the JWKS cache file %s: %s", self._cache_file, exc)

    def _load_document(self) -> Any:
        if self._loader is None:
            self._document = self._download()
            return self._document
        try:
            self._document = self._loader()
        except Exception as exc:  # a failing loader is a failed fetch, like HTTP's
            raise ValueError(f"JWKS loader failed: {exc}") from exc
        return self._document

    def _download(self) -> Any:
        with self._client.stream(
            "GET", self._request_url, headers={"Accept": "application/json"}
        ) as response:
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
