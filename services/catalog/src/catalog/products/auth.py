"""Who may do what in catalog, in one place: staff edit products, services reserve stock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError

from meshauth.django.decorators import authorize
from meshauth.django.middleware import DENIAL_ATTRIBUTE
from meshauth.django.ninja import MeshAuth
from meshauth.principal import Principal

WRITE_SCOPE = "catalog:write"
AUDIENCE = "catalog"


class MeshAuthFor(MeshAuth):
    """``MeshAuth`` that also names the audience the token must carry.

    The middleware accepts any audience in ``MESHAUTH_AUDIENCE``; stock may only be moved by a token
    minted for catalog itself, even if this deployment ever accepts more audiences.
    """

    def __init__(self, kind: Literal["user", "service"], audience: str, scopes: Iterable[str] = ()) -> None:
        super().__init__(kind=kind, scopes=scopes)
        self.audience = audience

    def __call__(self, request: HttpRequest) -> Principal | None:
        denial = authorize(request, self.kind, self.scopes, self.audience)
        if denial is None:
            principal: Principal = request.principal  # type: ignore[attr-defined]
            return principal
        setattr(request, DENIAL_ATTRIBUTE, denial)
        if denial.status == 401:
            raise AuthenticationError(denial.status, denial.detail)
        raise AuthorizationError(denial.status, denial.detail)


# A user token carrying catalog:write (identity grants it to staff accounts).
catalog_writer = MeshAuth(kind="user", scopes=(WRITE_SCOPE,))
# A service token minted for catalog: only another service (orders) reserves stock.
reserving_service = MeshAuthFor(kind="service", audience=AUDIENCE)


def client_id_of(request: HttpRequest) -> str:
    """The calling service's client id, kept on its reservations for the admin."""
    principal: Principal | None = getattr(request, "principal", None)
    if principal is None:
        return ""
    return (principal.client_id or principal.subject)[:200]
