"""Who may use orders: signed-in users, each seeing only their own orders."""

from __future__ import annotations

from django.http import HttpRequest

from meshauth.django.ninja import MeshAuth

customer = MeshAuth(kind="user")


def subject_of(request: HttpRequest) -> str:
    """The verified user's id (identity's ``sub``); orders are keyed by it."""
    return str(request.principal.subject)  # type: ignore[attr-defined]
