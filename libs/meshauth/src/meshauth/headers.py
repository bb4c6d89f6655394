"""The principal header protocol between the sidecar and the app in the same pod.

The sidecar verifies the bearer token, then forwards the caller to the app in three headers::

    X-Mesh-Principal            base64url(JSON of the verified claims), no padding
    X-Mesh-Principal-Timestamp  Unix time (integer seconds) when the sidecar signed them
    X-Mesh-Principal-Signature  "v1=" + hex(HMAC-SHA256(secret, "v1\\n" + timestamp + "\\n" + principal))

``secret`` is the per-pod ``MESHAUTH_PRINCIPAL_SECRET``. The app accepts the headers only with a
valid signature and a timestamp within a short window, so nothing but the sidecar can assert a
principal, and a captured set of headers is useless after the window.

Before forwarding, the sidecar removes every inbound *identity header* (:func:`is_identity_header`):
any name that, lower-cased with ``_`` turned into ``-``, starts with ``x-mesh-`` or another prefix of
:data:`IDENTITY_HEADER_PREFIXES`, or equals a name in :data:`IDENTITY_HEADER_NAMES` (the headers
other proxies and platforms use to assert a user, e.g. ``X-Forwarded-User``, ``Remote-User``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Final

from meshauth.errors import InvalidPrincipalHeaders, InvalidToken
from meshauth.principal import Principal
from meshcontract import (
    PRINCIPAL_HEADER,
    PRINCIPAL_HEADERS,
    PRINCIPAL_SIGNATURE_HEADER,
    PRINCIPAL_TIMESTAMP_HEADER,
    variable,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "IDENTITY_HEADER_NAMES",
    "IDENTITY_HEADER_PREFIXES",
    "bearer_token",
    "PRINCIPAL_HEADER",
    "PRINCIPAL_HEADERS",
    "PrincipalSigner",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "is_identity_header",
    "sign_principal",
    "strip_identity_headers",
    "strip_identity_meta",
    "verify_principal_headers",
]

# The names are the runtime contract's: the app and the sidecar must agree on them.
TIMESTAMP_HEADER: Final = PRINCIPAL_TIMESTAMP_HEADER
SIGNATURE_HEADER: Final = PRINCIPAL_SIGNATURE_HEADER

#: Seconds signed headers stay valid (``MESHAUTH_PRINCIPAL_MAX_AGE``'s default). Sidecar and app share
#: a clock (same node), so this only has to cover queueing in gunicorn's backlog.
DEFAULT_MAX_AGE: Final = float(variable("MESHAUTH_PRINCIPAL_MAX_AGE").default or 0)
# Tolerated clock difference in the other direction (timestamps slightly in the future).
_FUTURE_SKEW: Final = 5
_VERSION: Final = "v1"
_MAX_PAYLOAD: Final = 16_384

#: Normalised (lower-case, ``-``) prefixes of identity headers.
IDENTITY_HEADER_PREFIXES: Final = (
    "x-mesh-",
    "x-auth-request-",
    "x-amzn-oidc-",
    "x-ms-client-principal",
    "x-goog-authenticated-user-",
    "x-forwarded-user",
)
#: Normalised names of identity headers that no prefix covers.
IDENTITY_HEADER_NAMES: Final = frozenset(
    {
        "remote-user",
        "x-remote-user",
        "x-remote-group",
        "x-remote-email",
        "x-remote-name",
        "remote-group",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-user",
        "x-user-id",
        "x-user-email",
        "x-username",
        "x-auth-user",
        "x-authenticated-user",
        "x-authenticated-userid",
        "x-authenticated-scope",
        "x-principal",
        "x-client-id",
        "x-consumer-id",
        "x-consumer-username",
        "x-consumer-custom-id",
        "x-credential-identifier",
        "x-jwt-payload",
        "x-jwt-claims",
        "x-userinfo",
        "x-endpoint-api-userinfo",
        "x-apigateway-api-userinfo",
        "x-webauth-user",
    }
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@functools.lru_cache(maxsize=1024)
def is_identity_header(name: str) -> bool:
    """True when ``name`` (any case, ``_`` or ``-``) is a header that asserts who the caller is."""
    # Cached: every request's every header name is checked, on both sides of the sidecar.
    normalised = _normalise(name)
    return normalised in IDENTITY_HEADER_NAMES or normalised.startswith(IDENTITY_HEADER_PREFIXES)


def strip_identity_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers without any identity header, as (name, value) pairs (repeated names kept)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in items if not is_identity_header(name)]


def strip_identity_meta(meta: MutableMapping[str, object]) -> None:
    """Remove identity headers from a WSGI/Django ``request.META`` in place (``HTTP_*`` keys)."""
    for key in [k for k in meta if k.startswith("HTTP_") and is_identity_header(k[5:])]:
        del meta[key]


def _mac(secret: bytes, timestamp: str, payload: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(f"{_VERSION}\n{timestamp}\n{payload}".encode("ascii"))
    return f"{_VERSION}=" + mac.hexdigest()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    # The HMAC key schedule, computed once per secret (a pod has one); copied per message.
    return hmac.new(secret, digestmod=hashlib.sha256)


def _secret_bytes(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < 16:
        raise ValueError("the principal secret must be at least 16 bytes")
    return raw


def sign_principal(principal: Principal, secret: str | bytes, *, now: float | None = None) -> dict[str, str]:
    """The three principal headers for ``principal``, signed with ``secret``."""
    payload = _payload(principal)
    timestamp = str(int(time.time() if now is None else now))
    return {
        PRINCIPAL_HEADER: payload,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: _mac(_secret_bytes(secret), timestamp, payload),
    }


class PrincipalSigner:
    """:func:`sign_principal` for one secret, with the work that repeats done once.

    The HMAC key schedule is computed once; a token's payload (its claims as base64url JSON) once
    per token; and the signature once per token and second (the timestamp's resolution). The
    sidecar signs the same few tokens thousands of times a second.
    """

    def __init__(self, secret: str | bytes, *, max_tokens: int = 4096) -> None:
        self._mac = _keyed(_secret_bytes(secret))
        self._max_tokens = max_tokens
        # token -> (timestamp, headers, payload)
        self._signed: dict[str, tuple[str, Mapping[str, str], str]] = {}

    def sign(self, principal: Principal, token: str, *, now: float | None = None) -> Mapping[str, str]:
        """The three principal headers for ``principal``, the verified claims of ``token``.

        The mapping is shared between calls: copy it, do not change it.
        """
        timestamp = str(int(time.time() if now is None else now))
        cached = self._signed.get(token)
        if cached is not None and cached[0] == timestamp:
            return cached[1]
        payload = cached[2] if cached is not None else _payload(principal)
        mac = self._mac.copy()
        mac.update(f"{_VERSION}\n{timestamp}\n{payload}".encode("ascii"))
        headers = {
            PRINCIPAL_HEADER: payload,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: f"{_VERSION}={mac.hexdigest()}",
        }
        if cached is None and len(self._signed) >= self._max_tokens:
            self._signed.clear()  # tokens expire within minutes: no need for an LRU order
        self._signed[token] = (timestamp, headers, payload)
        return headers


def _payload(principal: Principal) -> str:
    body = json.dumps(dict(principal.claims), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def _lookup(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; Django's and httpx's header mappings are not.
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def verify_principal_headers(
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    max_age: float = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> Principal | None:
    """The principal the sidecar asserted, or None when the request carries no principal headers.

    Raises :class:`InvalidPrincipalHeaders` when they are incomplete, badly signed, too old or
    unreadable: only the sidecar can produce them, so any of that means tampering or misconfiguration.
    """
    payload = _lookup(headers, PRINCIPAL_HEADER)
    timestamp = _lookup(headers, TIMESTAMP_HEADER)
    signature = _lookup(headers, SIGNATURE_HEADER)
    if payload is None and timestamp is None and signature is None:
        return None
    if payload is None or timestamp is None or signature is None:
        raise InvalidPrincipalHeaders("incomplete principal headers")
    if len(payload) > _MAX_PAYLOAD or not payload.isascii() or not timestamp.isascii():
        raise InvalidPrincipalHeaders("principal headers are not well-formed")
    expected = _mac(_secret_bytes(secret), timestamp, payload)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise InvalidPrincipalHeaders("bad principal signature")
    try:
        signed_at = int(timestamp)
    except ValueError:
        raise InvalidPrincipalHeaders("bad principal timestamp") from None
    current = time.time() if now is None else now
    if signed_at < current - max_age or signed_at > current + _FUTURE_SKEW:
        raise InvalidPrincipalHeaders("principal headers have expired")
    # The signature is checked above on every request; only decoding a payload seen before is skipped.
    principal = _decoded.get(payload)
    if principal is None:
        principal = _decode_payload(payload)
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()  # payloads change with every token: no need for an LRU order
        _decoded[payload] = principal
    return principal


_DECODED_MAX: Final = 4096
_decoded: dict[str, Principal] = {}


def _decode_payload(payload: str) -> Principal:
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidPrincipalHeaders("unreadable principal payload") from None
    if not isinstance(claims, dict):
        raise InvalidPrincipalHeaders("unreadable principal payload")
    try:
        return Principal.from_claims(claims)
    except InvalidToken as exc:
        raise InvalidPrincipalHeaders(f"unusable principal: {exc.reason}") from None


def bearer_token(value: str | None) -> str | None:
    """The token of one ``Authorization`` value; None when absent; ``InvalidToken`` when unusable.

    Any scheme but ``Bearer`` is refused rather than ignored: a credential nobody checked must not
    travel on to the app.
    """
    if value is None:
        return None
    if "," in value:
        # A server joined two Authorization headers into one; which one counts would be ambiguous.
        raise InvalidToken("malformed", "Send exactly one Authorization header.")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise InvalidToken("malformed", "Only Bearer authorization is accepted.")
    if not token:
        raise InvalidToken("missing")
    return token
