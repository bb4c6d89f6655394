"""The one exception type verification raises, and its fixed set of machine-readable reasons."""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["REASONS", "InvalidPrincipalHeaders", "InvalidToken", "Reason"]

Reason = Literal[
    "missing",
    "malformed",
    "too_large",
    "bad_header",
    "unknown_kid",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "missing_claim",
    "disallowed_alg",
    "jwks_unavailable",
]
REASONS: Final[frozenset[str]] = frozenset(get_args(Reason))

# What a client is told per reason. Deliberately terse: details (which claim, which kid) go to logs
# and metrics, not to whoever sent the token.
_DETAIL: Final[dict[str, str]] = {
    "missing": "Authentication credentials were not provided.",
    "malformed": "The access token is malformed.",
    "too_large": "The access token is too large.",
    "bad_header": "The access token header is not acceptable.",
    "unknown_kid": "The access token was signed by an unknown key.",
    "bad_signature": "The access token signature is invalid.",
    "expired": "The access token has expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "wrong_audience": "The access token is not meant for this service.",
    "wrong_issuer": "The access token was issued by an unknown issuer.",
    "missing_claim": "The access token lacks a required claim.",
    "disallowed_alg": "The access token uses a disallowed algorithm.",
    "jwks_unavailable": "The signing keys are unavailable; try again later.",
}


class InvalidToken(Exception):
    """A token was rejected. ``reason`` is one of :data:`REASONS`; ``detail`` is safe to show a client."""

    def __init__(self, reason: Reason, detail: str | None = None) -> None:
        self.reason: Reason = reason
        self.detail: str = detail or _DETAIL[reason]
        super().__init__(f"{reason}: {self.detail}")


class InvalidPrincipalHeaders(Exception):
    """Principal headers were present but their signature, timestamp or payload is not acceptable."""
