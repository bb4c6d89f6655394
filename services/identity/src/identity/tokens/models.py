"""Signing keys, refresh tokens, service clients and failed logins: identity's security state."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class SigningKeyQuerySet(models.QuerySet["SigningKey"]):
    def published(self) -> SigningKeyQuerySet:
        """Keys whose tokens may still be live: active ones, and retired ones inside the overlap."""
        now = timezone.now()
        return self.filter(models.Q(retired_at__isnull=True) | models.Q(publish_until__gt=now))


class SigningKey(models.Model):
    """An asymmetric key pair. The newest active key signs; JWKS publishes every live one.

    Rotation publishes the new key before it signs anything (``activates_at``), so every verifier
    can have fetched it by the time it meets the new ``kid``; and it keeps publishing the retired
    key until every token it signed has expired (``publish_until``). No valid token is rejected.
    """

    kid = models.CharField(max_length=64, primary_key=True)
    algorithm = models.CharField(max_length=16)
    # PEM, encrypted with IDENTITY_KEY_ENCRYPTION_KEY when that is set (see identity.tokens.keys).
    private_key = models.TextField()
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    activates_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)
    publish_until = models.DateTimeField(null=True, blank=True)

    objects = SigningKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-activates_at"]

    def __str__(self) -> str:
        return f"{self.kid} ({self.algorithm})"


class RefreshToken(models.Model):
    """One refresh token, stored as a SHA-256 hash; rotation chains tokens into a family.

    Presenting a token that was already used means it leaked (or the client is replaying): the
    whole family is revoked, logging out the thief and the victim alike (RFC 6819 §5.2.2.3).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    family = models.UUIDField(default=uuid.uuid4, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refresh token {self.pk} of user {self.user_id}"


class ServiceClient(models.Model):
    """A service's credentials for the client-credentials grant; the secret is stored hashed."""

    client_id = models.CharField(max_length=64, unique=True)
    secret_hash = models.CharField(max_length=256)
    audiences = models.JSONField(default=list, help_text="Services this client may get tokens for.")
    scopes = models.CharField(max_length=500, blank=True)
    can_introspect = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.client_id


class LoginFailure(models.Model):
    """A failed login, keyed by account and by client address; the rate limiter counts these rows.

    Kept in the database so every worker of every pod sees the same count.
    """

    key = models.CharField(max_length=300)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["key", "at"])]

    def __str__(self) -> str:
        return f"{self.key} at {self.at}"
