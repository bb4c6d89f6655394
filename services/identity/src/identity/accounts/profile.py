"""The caller's own profile: ``GET/PATCH /api/v1/me`` (a user token; service tokens get 403)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from identity.accounts.models import User
from meshauth.django.ninja import MeshAuth
from meshkit.api import PartialUpdate

router = Router(tags=["profile"], auth=MeshAuth(kind="user", scopes=("profile",)))


class ProfileOut(Schema):
    id: int
    email: str
    name: str
    bio: str
    cv_details: str
    is_staff: bool


class ProfilePatch(PartialUpdate):
    name: str | None = Field(default=None, max_length=150)
    bio: str | None = Field(default=None, max_length=2000)
    cv_details: str | None = Field(default=None, max_length=10000)


def _caller(request: HttpRequest) -> User:
    principal = request.principal  # type: ignore[attr-defined]
    user = (
        User.objects.filter(pk=int(principal.subject), is_active=True).first()
        if principal.subject.isdigit()
        else None
    )
    if user is None:
        # A valid token for an account deleted or disabled since it was issued.
        raise HttpError(404, "Account not found.")
    return user


@router.get("me", response=ProfileOut, summary="The caller's profile")
def me(request: HttpRequest) -> User:
    return _caller(request)


@router.patch("me", response=ProfileOut, summary="Update the caller's profile")
def update_me(request: HttpRequest, payload: ProfilePatch) -> User:
    user = _caller(request)
    changes = payload.dict(exclude_unset=True, exclude_none=True)
    for field, value in changes.items():
        setattr(user, field, value)
    if changes:
        user.save(update_fields=list(changes))
    return user
