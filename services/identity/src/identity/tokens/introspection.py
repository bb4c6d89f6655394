"""``POST /api/v1/auth/introspect``: the talk's ``authenticate(token, cv_details=True)`` as an endpoint.

For callers that cannot verify JWTs themselves. Only service tokens whose client may introspect are
answered; everyone else verifies locally with meshauth (no network call per request).
"""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from identity.accounts.models import User
from identity.tokens import issuing
from identity.tokens.models import ServiceClient
from meshauth.django.conf import get_verifier
from meshauth.django.ninja import MeshAuth
from meshauth.errors import InvalidToken

router = Router(tags=["tokens"])


class IntrospectIn(Schema):
    token: str = Field(max_length=16_384)
    include_profile: Annotated[bool, Field(strict=True)] = False


class PersonalInfo(Schema):
    email: str
    name: str
    bio: str
    cv_details: str


class IntrospectOut(Schema):
    active: bool
    user_id: int | None = None
    scope: str | None = None
    personal_info: PersonalInfo | None = None


class Detail(Schema):
    detail: str


@router.post(
    "auth/introspect",
    response={200: IntrospectOut, 403: Detail},
    auth=MeshAuth(kind="service"),
    summary="Is this user token active? (for callers that cannot verify JWTs)",
)
def introspect(request: HttpRequest, payload: IntrospectIn) -> Status[object]:
    caller = request.principal  # type: ignore[attr-defined]
    if not ServiceClient.objects.filter(
        client_id=caller.client_id, active=True, can_introspect=True
    ).exists():
        return Status(403, {"detail": "This client may not introspect tokens."})
    try:
        principal = get_verifier().verify(payload.token)
    except InvalidToken:
        return Status(200, {"active": False})
    is_user = principal.is_user and principal.subject.isdigit()
    user = User.objects.filter(pk=int(principal.subject), is_active=True).first() if is_user else None
    # A logged-out or revoked session ends its access tokens here at once; services that verify
    # locally accept them until they expire (IDENTITY_ACCESS_TOKEN_TTL, 10 minutes by default).
    if user is None or not issuing.session_active(principal.claims.get("sid")):
        return Status(200, {"active": False})
    answer: dict[str, object] = {
        "active": True,
        "user_id": user.pk,
        "scope": " ".join(sorted(principal.scopes)),
    }
    if payload.include_profile:
        answer["personal_info"] = {
            "email": user.email,
            "name": user.name,
            "bio": user.bio,
            "cv_details": user.cv_details,
        }
    return Status(200, answer)
