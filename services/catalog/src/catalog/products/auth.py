"""Who may do what in catalog, in one place: staff edit products, services reserve stock."""

from __future__ import annotations

from django.http import HttpRequest
from meshauth.django.ninja import MeshAuth

WRITE_SCOPE = "catalog:write"

# A user token carrying catalog:write (identity grants it to staff accounts).
catalog_writer = MeshAuth(kind="user", scopes=(WRITE_SCOPE,))
# A service token whose audience is catalog: only another service (orders) reserves stock.
reserving_service = MeshAuth(kind="service")


def client_id_of(request: HttpRequest) -> str:
    """The calling service's client id, kept on its reservations for the admin."""
    principal = getattr(request, "principal", None)
    return str(getattr(principal, "client_id", None) or getattr(principal, "subject", "") or "")[:200]
