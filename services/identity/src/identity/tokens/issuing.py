"""Access, refresh and service tokens: what identity hands out and how refresh rotation works."""

from __future__ import annotations

import datetime
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from identity.accounts.models import User
from identity.tokens import keys
from identity.tokens.models import RefreshToken, ServiceClient

USER_TOKEN = "access"  # noqa: S105 - token_use claim values, not secrets
SERVICE_TOKEN = "service"  # noqa: S105


class RefreshRejected(Exception):
    """The refresh token is unknown, expired, revoked, or was already used (family now revoked)."""


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


def user_scopes(user: User) -> list[str]:
    """Scopes follow the account: everyone reads their profile; staff may edit the catalog."""
    scopes = ["profile"]
    if user.is_staff:
        scopes.append("catalog:write")
    return scopes


def _claims(sub: str, audience: str | list[str], scope: list[str], ttl: int, **extra: Any) -> dict[str, Any]:
    now = int(timezone.now().timestamp())
    return {
        "iss": settings.MESHAUTH_ISSUER,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scope),
        **extra,
    }


def access_token(user: User, session: uuid.UUID) -> str:
    """A user's access token. ``sid`` names its session (the refresh family), so introspection
    can answer "inactive" once the session is logged out or revoked."""
    ttl = settings.IDENTITY_ACCESS_TOKEN_TTL
    audience = settings.IDENTITY_USER_AUDIENCE
    claims = _claims(str(user.pk), audience, user_scopes(user), ttl, token_use=USER_TOKEN, sid=str(session))
    return keys.sign(claims)


def service_token(client: ServiceClient, audience: str) -> tuple[str, int]:
    ttl = settings.IDENTITY_SERVICE_TOKEN_TTL
    scope = client.scopes.split()
    claims = _claims(f"service:{client.client_id}", audience, scope, ttl, token_use=SERVICE_TOKEN)
    claims["client_id"] = client.client_id
    return keys.sign(claims), ttl


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh(user: User, family: uuid.UUID) -> str:
    token = secrets.token_urlsafe(32)
    RefreshToken.objects.create(
        user=user,
        family=family,
        token_hash=_hash(token),
        expires_at=timezone.now() + datetime.timedelta(seconds=settings.IDENTITY_REFRESH_TOKEN_TTL),
    )
    return token


def issue(user: User) -> IssuedTokens:
    """A fresh login: an access token and the first refresh token of a new family (the session)."""
    session = uuid.uuid4()
    with transaction.atomic():
        refresh = _new_refresh(user, session)
    return IssuedTokens(access_token(user, session), refresh, settings.IDENTITY_ACCESS_TOKEN_TTL)


def session_active(session: object) -> bool:
    """True while the session ``sid`` names has a refresh token that was never revoked."""
    try:
        family = uuid.UUID(str(session))
    except ValueError:
        return False
    return RefreshToken.objects.filter(family=family, revoked_at__isnull=True).exists()


def revoke_family(family: uuid.UUID) -> None:
    RefreshToken.objects.filter(family=family, revoked_at__isnull=True).update(revoked_at=timezone.now())


def refresh(token: str) -> IssuedTokens:
    """Rotate: the presented token is spent, a new one of the same family is returned.

    A token presented twice revokes its family (the second presenter may be a thief, and we cannot
    tell which one). The row lock makes two simultaneous uses of one token count as reuse.
    """
    now = timezone.now()
    with transaction.atomic():
        row = (
            RefreshToken.objects.select_for_update()
            .select_related("user")
            .filter(token_hash=_hash(token))
            .first()
        )
        if row is None:
            problem = "unknown refresh token"
        elif row.used_at is not None or row.revoked_at is not None:
            # Committed before we answer: the revocation must stick although the request fails.
            revoke_family(row.family)
            problem = "refresh token reuse detected; the session is revoked"
        elif row.expires_at <= now or not row.user.is_active:
            problem = "refresh token expired"
        else:
            problem = ""
            row.used_at = now
            row.save(update_fields=["used_at"])
            new_refresh = _new_refresh(row.user, row.family)
    if problem or row is None:
        raise RefreshRejected(problem)
    return IssuedTokens(access_token(row.user, row.family), new_refresh, settings.IDENTITY_ACCESS_TOKEN_TTL)


def logout(token: str) -> bool:
    """Revoke the token's whole family; False when the token is unknown."""
    row = RefreshToken.objects.filter(token_hash=_hash(token)).first()
    if row is None:
        return False
    revoke_family(row.family)
    return True
