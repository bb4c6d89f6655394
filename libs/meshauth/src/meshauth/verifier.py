"""Local verification of identity's access tokens: no network call per request.

Pure Python (no Django). Thread-safe: one :class:`Verifier` per process serves every gunicorn
thread; asyncio code calls :meth:`Verifier.averify`, which moves a JWKS fetch off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Final

import jwt

from meshauth.errors import InvalidToken
from meshauth.jwks import HTTP_TIMEOUT, MAX_STALENESS, MIN_REFRESH_INTERVAL, TTL, JWKSCache, declared_default
from meshauth.keys import ALGORITHMS
from meshauth.metrics import AuthMetrics, default_metrics
from meshauth.principal import Principal

__all__ = ["MAX_LEEWAY", "MAX_TOKEN_BYTES", "REQUIRED_CLAIMS", "Verifier"]

log = logging.getLogger("meshauth.verifier")

MAX_LEEWAY: Final = 60
#: The default of ``MESHAUTH_MAX_TOKEN_BYTES`` (the runtime contract's).
MAX_TOKEN_BYTES: Final = int(declared_default("MESHAUTH_MAX_TOKEN_BYTES"))
#: The default of ``MESHAUTH_LEEWAY``.
LEEWAY: Final = declared_default("MESHAUTH_LEEWAY")
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub")
# Header parameters that point at or embed a key. Honouring any of them lets the token choose the
# key that verifies it, so their mere presence is a rejection.
FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c"})
# Only asymmetric algorithms: with a symmetric one, anyone holding the public key could sign.
SUPPORTED_ALGORITHMS: Final = frozenset(ALGORITHMS)
_RESULT_CACHE_SIZE: Final = 10_000


class Verifier:
    """Verifies compact JWTs against identity's JWKS and returns the :class:`Principal`.

    Every check is local once the JWKS is cached. Accepted tokens are remembered (keyed by the
    whole token string) until they expire, so a client reusing its token costs a dict lookup; the
    memory is dropped whenever the published key set changes.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Sequence[str],
        jwks_url: str | None = None,
        jwks: JWKSCache | None = None,
        algorithms: Iterable[str] = ALGORITHMS,
        leeway: float = LEEWAY,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        jwks_ttl: float = TTL,
        jwks_min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        jwks_max_staleness: float = MAX_STALENESS,
        http_timeout: float = HTTP_TIMEOUT,
        jwks_cache_file: str | None = None,
        metrics: AuthMetrics | None = None,
        mode: str = "inprocess",
    ) -> None:
        self.algorithms = frozenset(algorithms)
        if not self.algorithms or not self.algorithms <= SUPPORTED_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}")
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
        if not issuer:
            raise ValueError("issuer is required")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(audiences):
            raise ValueError("audience is required")
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.metrics = metrics if metrics is not None else default_metrics()
        self.mode = mode
        if jwks is None:
            if not jwks_url:
                raise ValueError("jwks_url or jwks is required")
            jwks = JWKSCache(
                jwks_url,
                ttl=jwks_ttl,
                min_refresh_interval=jwks_min_refresh_interval,
                max_staleness=jwks_max_staleness,
                timeout=http_timeout,
                algorithms=self.algorithms,
                metrics=self.metrics,
                cache_file=jwks_cache_file,
            )
        if jwks.metrics is None:
            jwks.metrics = self.metrics
        self.jwks = jwks
        self._accepted: OrderedDict[str, tuple[Principal, float, float, int]] = OrderedDict()
        self._accepted_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------

    def verify(self, token: str | None) -> Principal:
        """Verify ``token`` (without the ``Bearer`` prefix); raise ``InvalidToken`` when it is not valid."""
        try:
            principal = self._verify(token)
        except InvalidToken as exc:
            self.metrics.decision("rejected", exc.reason, self.mode)
            raise
        self.metrics.decision("accepted", "", self.mode)
        return principal

    async def averify(self, token: str | None) -> Principal:
        """:meth:`verify` for asyncio: a JWKS fetch, if one is due, runs in a worker thread."""
        if token and len(token) <= self.max_token_bytes and self._remembered(token) is not None:
            # Accepted before and the keys are fresh: no fetch can be due, skip decoding the header.
            return self.verify(token)
        kid = _kid_or_none(token, self.max_token_bytes)
        if kid is not None and self.jwks.would_fetch(kid):
            return await asyncio.to_thread(self.verify, token)
        return self.verify(token)

    def close(self) -> None:
        """Release the JWKS cache's HTTP client."""
        self.jwks.close()

    # -- the checks -------------------------------------------------------------------------------

    def _verify(self, token: str | None) -> Principal:
        if not token:
            raise InvalidToken("missing")
        if len(token) > self.max_token_bytes:
            raise InvalidToken("too_large")
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        if token.count(".") != 2:
            raise InvalidToken("malformed", "A token has three dot-separated segments.")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken("disallowed_alg")
        if "crit" in header:
            raise InvalidToken("bad_header", "Critical header extensions are not supported.")
        if FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("bad_header", "Key references in the token header are not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("bad_header", "The token header has no key id.")
        key = self.jwks.get(kid)
        if key.algorithm != algorithm:
            raise InvalidToken("disallowed_alg", "The token's algorithm does not match its key.")
        claims = self._decode(token, key.key, algorithm)
        principal = Principal.from_claims(claims)
        self._remember(token, principal, claims)
        return principal

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=list(self.audiences),
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong_issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken("missing_claim", f"The access token lacks the `{exc.claim}` claim.") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad_signature") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("disallowed_alg") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed") from None
        except Exception:
            # Whatever a hostile token makes a parser do must end as a 401, never a 500.
            log.exception("unexpected error while decoding a token")
            raise InvalidToken("malformed") from None
        return claims

    # -- accepted-token memory --------------------------------------------------------------------

    def _remembered(self, token: str) -> Principal | None:
        entry = self._accepted.get(token)
        if entry is None:
            return None
        principal, exp, nbf, generation = entry
        now = time.time()
        if generation != self.jwks.generation or now > exp + self.leeway or now < nbf - self.leeway:
            with self._accepted_lock:
                self._accepted.pop(token, None)
            return None
        # Past the JWKS TTL the full path runs: it refreshes the keys (or finds them too stale).
        return principal if self.jwks.is_fresh() else None

    def _remember(self, token: str, principal: Principal, claims: dict[str, Any]) -> None:
        exp = float(claims["exp"])
        nbf = float(claims.get("nbf", claims["iat"]))
        with self._accepted_lock:
            if len(self._accepted) >= _RESULT_CACHE_SIZE:
                self._accepted.popitem(last=False)
            self._accepted[token] = (principal, exp, nbf, self.jwks.generation)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(_b64decode(segment))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed", "The token header is not base64url-encoded JSON.") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed", "The token header is not a JSON object.")
    return header


def _kid_or_none(token: str | None, max_bytes: int) -> str | None:
    if not token or len(token) > max_bytes or token.count(".") != 2:
        return None
    try:
        kid = _header(token).get("kid")
    except InvalidToken:
        return None
    return kid if isinstance(kid, str) else None
