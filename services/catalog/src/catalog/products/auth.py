"""Who may do what in catalog, in one place: staff edit products, services reserve stock."""

from __future__ import annotations

from django.http import HttpRequest

from meshauth.django.ninja import MeshAuth
from meshauth.principal import Principal

WRITE_SCOPE = "catalog:write"
AUDIENCE = "catalog"


# A user token carrying catalog:write (identity grants it to staff accounts).
catalog_writer = MeshAuth(kind="user", scopes=(WRITE_SCOPE,))
# A service token minted for catalog: only another service (orders) reserves stock.
reserving_service = MeshAuth(kind="service", audience=AUDIENCE)


def client_id_of(request: HttpRequest) -> str:
    """The calling service's client id, kept on its reservations for the admin."""
    principal: Principal | None = getattr(request, "principal", None)
    if principal is None:
        return ""
    return (principal.client_id or principal.subject)[:200]
