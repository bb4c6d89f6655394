"""The verified caller a request is made on behalf of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from meshauth.errors import InvalidToken

__all__ = [
    "MAX_ID_CHARS",
    "MAX_SCOPE_CHARS",
    "SERVICE_TOKEN_USE",
    "USER_TOKEN_USE",
    "Principal",
    "PrincipalKind",
]

PrincipalKind = Literal["user", "service"]

# identity marks every token it signs with `token_use`: "access" for an end user's access token,
# "service" for a client-credentials token a service obtained for itself. It is the only claim
# that decides the kind; `client_id` is informational.
USER_TOKEN_USE: Final = "access"  # noqa: S105 - a claim value
SERVICE_TOKEN_USE: Final = "service"  # noqa: S105 - a claim value
_KIND_BY_USE: Final[dict[str, PrincipalKind]] = {USER_TOKEN_USE: "user", SERVICE_TOKEN_USE: "service"}
# Claims the services store or log (``sub``, ``client_id``, ``jti``) fit their columns (200 chars) and
# are printable: a validly signed but odd token is a 401 here, never a 5xx in a view downstream.
MAX_ID_CHARS: Final = 200
MAX_SCOPE_CHARS: Final = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an end user or a service, with the scopes its token grants.

    ``claims`` is the token's full (verified) payload, read-only.
    """

    kind: PrincipalKind
    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_user(self) -> bool:
        """True for an end user's access token."""
        return self.kind == "user"

    @property
    def is_service(self) -> bool:
        """True for a service's client-credentials token."""
        return self.kind == "service"

    @property
    def client_id(self) -> str | None:
        """The service client id (service tokens only)."""
        value = self.claims.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def audiences(self) -> frozenset[str]:
        """The token's ``aud`` as a set."""
        aud = self.claims.get("aud")
        if isinstance(aud, str):
            return frozenset({aud})
        if isinstance(aud, list):
            return frozenset(a for a in aud if isinstance(a, str))
        return frozenset()

    def has_scopes(self, *scopes: str) -> bool:
        """True when every one of ``scopes`` was granted."""
        return self.scopes.issuperset(scopes)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Build a principal from a verified payload; raises ``InvalidToken`` when it is not one."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("missing_claim", "The access token lacks a usable `sub` claim.")
        _check_text(claims, "sub", MAX_ID_CHARS)
        for name in ("client_id", "jti"):
            if name in claims:
                _check_text(claims, name, MAX_ID_CHARS)
        use = claims.get("token_use")
        if use is None:
            raise InvalidToken("missing_claim", "The access token lacks the `token_use` claim.")
        kind = _KIND_BY_USE.get(use) if isinstance(use, str) else None
        if kind is None:
            # A refresh, ID or unknown token type must never authenticate a request.
            raise InvalidToken("malformed", "The token is not an access token.")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidToken("malformed", "The `scope` claim must be a space-separated string.")
        _check_text(claims, "scope", MAX_SCOPE_CHARS)
        return cls(
            kind=kind,
            subject=sub,
            scopes=frozenset(scope.split()),
            claims=MappingProxyType(dict(claims)),
        )


def _check_text(claims: Mapping[str, Any], name: str, max_chars: int) -> None:
    value = claims[name]
    if not isinstance(value, str) or len(value) > max_chars or not value.isprintable():
        raise InvalidToken(
            "malformed", f"The `{name}` claim must be printable text of at most {max_chars} characters."
        )
