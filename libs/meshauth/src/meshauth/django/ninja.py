"""django-ninja auth: ``auth=MeshAuth(kind="user", scopes=[...])`` on a router or operation.

Gives the same 401/403 answers as the decorators (JSON ``detail`` + ``reason``, ``WWW-Authenticate``):
ninja renders its own error for the exception raised here, and ``MeshAuthMiddleware`` replaces it
with the decorators' response. The principal ends up in ``request.auth`` (and ``request.principal``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.security import HttpBearer

from meshauth.django.decorators import authorize
from meshauth.django.middleware import DENIAL_ATTRIBUTE
from meshauth.principal import Principal

__all__ = ["MeshAuth"]


class MeshAuth(HttpBearer):
    """Require a principal of ``kind`` holding every one of ``scopes`` (documented as bearer auth).

    ``audience`` additionally requires the token to name it in ``aud``: the middleware accepts every
    audience in ``MESHAUTH_AUDIENCE``, while e.g. moving stock needs a token minted for catalog itself.
    """

    def __init__(
        self,
        kind: Literal["user", "service"] = "user",
        scopes: Iterable[str] = (),
        audience: str | None = None,
    ) -> None:
        super().__init__()
        self.kind: Literal["user", "service"] = kind
        self.scopes = tuple(scopes)
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

    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        """Not used: the middleware verified the token already; kept for HttpBearer's contract."""
        principal: Principal | None = getattr(request, "principal", None)
        return principal
