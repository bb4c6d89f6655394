"""The 401/403 answers, identical from the middleware, the decorators and the ninja auth class."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.http import JsonResponse

from meshauth.errors import InvalidToken

__all__ = ["Denial", "forbidden", "invalid_token", "unauthenticated"]


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: HTTP status, machine reason, human detail and the ``WWW-Authenticate`` challenge."""

    status: int
    reason: str
    detail: str
    challenge: str | None = None
    retry_after: int | None = None

    def response(self) -> JsonResponse:
        """The JSON response ``{"detail": ..., "reason": ...}`` with its headers."""
        response = JsonResponse({"detail": self.detail, "reason": self.reason}, status=self.status)
        if self.challenge:
            response["WWW-Authenticate"] = self.challenge
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def invalid_token(exc: InvalidToken) -> Denial:
    """A token was sent and rejected: 401 ``invalid_token`` (503 while the keys are unavailable)."""
    if exc.reason == "jwks_unavailable":
        # The token may well be valid; a 401 would send the client to log in again for nothing.
        return Denial(503, exc.reason, exc.detail, retry_after=5)
    return Denial(401, exc.reason, exc.detail, challenge='Bearer error="invalid_token"')


def unauthenticated() -> Denial:
    """No credentials on a view that needs them (RFC 6750: no error code in the challenge)."""
    return Denial(401, "missing", "Authentication credentials were not provided.", challenge="Bearer")


def forbidden(reason: str, detail: str, scopes: Iterable[str] = ()) -> Denial:
    """Authenticated but not allowed; with ``scopes``, the challenge names the scopes needed."""
    needed = " ".join(scopes)
    challenge = f'Bearer error="insufficient_scope", scope="{needed}"' if needed else None
    return Denial(403, reason, detail, challenge=challenge)
