"""identity's signing keys: create, rotate, sign, publish.

Private keys live in identity's schema, encrypted with ``IDENTITY_KEY_ENCRYPTION_KEY`` (a Fernet key
from a Secret) when it is set, so a database dump alone cannot mint tokens.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
from typing import Any

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.utils import timezone

from identity.tokens.models import SigningKey

ALGORITHMS = ("EdDSA", "RS256")
_ENCRYPTED_PREFIX = "fernet:"


def _fernet() -> Fernet | None:
    key = settings.IDENTITY_KEY_ENCRYPTION_KEY
    if not key:
        return None
    try:
        return Fernet(key)
    except ValueError:
        raise ImproperlyConfigured(
            "IDENTITY_KEY_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes)."
        ) from None


def _seal(pem: bytes) -> str:
    fernet = _fernet()
    return _ENCRYPTED_PREFIX + fernet.encrypt(pem).decode() if fernet else pem.decode()


def _unseal(stored: str) -> bytes:
    if not stored.startswith(_ENCRYPTED_PREFIX):
        return stored.encode()
    fernet = _fernet()
    if fernet is None:
        raise ImproperlyConfigured("Signing keys are encrypted: set IDENTITY_KEY_ENCRYPTION_KEY.")
    try:
        return fernet.decrypt(stored[len(_ENCRYPTED_PREFIX) :].encode())
    except InvalidToken:
        raise ImproperlyConfigured("IDENTITY_KEY_ENCRYPTION_KEY does not decrypt the signing keys.") from None


def _new_private_key(algorithm: str) -> Any:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}")


def _public_jwk(private_key: Any, algorithm: str, kid: str) -> dict[str, Any]:
    public = private_key.public_key()
    algo = jwt.algorithms.OKPAlgorithm if algorithm == "EdDSA" else jwt.algorithms.RSAAlgorithm
    jwk: dict[str, Any] = json.loads(algo.to_jwk(public))
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return jwk


def _thumbprint_kid(private_key: Any) -> str:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(public).digest()[:12]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def create_key(algorithm: str | None = None, activates_at: datetime.datetime | None = None) -> SigningKey:
    """Generate a new key pair and store it; it signs from ``activates_at`` (default: now)."""
    algorithm = algorithm or settings.IDENTITY_SIGNING_ALGORITHM
    private_key = _new_private_key(algorithm)
    kid = _thumbprint_kid(private_key)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey.objects.create(
        kid=kid,
        algorithm=algorithm,
        private_key=_seal(pem),
        public_jwk=_public_jwk(private_key, algorithm, kid),
        activates_at=activates_at or timezone.now(),
    )


def rotate(
    algorithm: str | None = None,
    overlap: datetime.timedelta | None = None,
    activate_after: datetime.timedelta | None = None,
) -> tuple[SigningKey, list[str]]:
    """Publish a new key now, let it sign after ``activate_after``, and retire the current signer then.

    ``activate_after`` defaults to twice the verifiers' JWKS refresh interval, so every verifier can
    have fetched the new key before the first token it signs arrives. The retired key stays published
    for ``overlap`` after that (default: the access-token lifetime plus a minute of clock leeway).
    """
    overlap = overlap or datetime.timedelta(seconds=settings.IDENTITY_ACCESS_TOKEN_TTL + 60)
    if activate_after is None:
        activate_after = datetime.timedelta(seconds=settings.IDENTITY_KEY_ACTIVATION_DELAY)
    activates_at = timezone.now() + activate_after
    with transaction.atomic():
        retiring = list(SigningKey.objects.select_for_update().filter(retired_at__isnull=True))
        for key in retiring:
            key.retired_at = activates_at
            key.publish_until = activates_at + overlap
            key.save(update_fields=["retired_at", "publish_until"])
        new = create_key(algorithm, activates_at)
    return new, [key.kid for key in retiring]


def _signer() -> SigningKey | None:
    now = timezone.now()
    return (
        SigningKey.objects.filter(activates_at__lte=now)
        .filter(models.Q(retired_at__isnull=True) | models.Q(retired_at__gt=now))
        .order_by("-activates_at")
        .first()
    )


def current_key() -> SigningKey:
    """The signer: the newest key already active and not yet retired, created on first use."""
    key = _signer()
    if key is not None:
        return key
    with transaction.atomic(), connection.cursor() as cursor:
        # Two workers racing on an empty table must not both create a signer.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('identity.signing_key'))")
        return _signer() or create_key()


@functools.lru_cache(maxsize=8)
def _load_private(kid: str, stored: str) -> Any:
    # Parsing (and decrypting) a PEM costs more than signing with it; keys never change under a kid.
    return serialization.load_pem_private_key(_unseal(stored), password=None)


def sign(claims: dict[str, Any]) -> str:
    """A compact JWT of ``claims`` signed by the current key, its ``kid`` in the header."""
    key = current_key()
    private = _load_private(key.kid, key.private_key)
    return jwt.encode(claims, private, algorithm=key.algorithm, headers={"kid": key.kid})


def jwks() -> dict[str, Any]:
    """The public keys verifiers may meet in live tokens."""
    current_key()  # a fresh deployment publishes its first key before anyone logs in
    return {"keys": [key.public_jwk for key in SigningKey.objects.published()]}
