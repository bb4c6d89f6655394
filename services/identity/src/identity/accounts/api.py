"""Sign-up and the caller's profile."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field

from identity.accounts.models import User, normalize_email

router = Router(tags=["accounts"])


class SignupIn(Schema):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)
    name: str = Field(default="", max_length=150)


class UserOut(Schema):
    id: int
    email: str


class Invalid(Schema):
    detail: str
    errors: dict[str, list[str]]


class Detail(Schema):
    detail: str


def _problems(payload: SignupIn, email: str) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        problems["email"] = list(exc.messages)
    try:
        # Judge the password against the would-be user, so "alice@example.com"/"alice123" fails.
        validate_password(payload.password, User(email=email, name=payload.name))
    except DjangoValidationError as exc:
        problems["password"] = list(exc.messages)
    return problems


@router.post(
    "auth/signup",
    response={201: UserOut, 400: Invalid, 409: Detail},
    summary="Create an account",
)
def signup(request: HttpRequest, payload: SignupIn) -> Status[object]:
    """The address is stored in one spelling (NFKC, case-folded): another spelling of an existing
    address, such as one written with the Kelvin sign, is 409."""
    email = normalize_email(payload.email)
    problems = _problems(payload, email)
    if problems:
        return Status(400, {"detail": "Invalid request.", "errors": problems})
    try:
        with transaction.atomic():
            user = User.objects.create_user(email, payload.password, name=payload.name)
    except IntegrityError:
        raise HttpError(409, "An account with this email already exists.") from None
    return Status(201, user)
