"""Signing-key helpers for identity: generate a key, publish its public JWK, sign a token.

The default algorithm is the one that is fastest to *verify* (every request of every service
verifies; only identity signs); ``bench/verify_bench.py`` measures both candidates.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "Algorithm",
    "PrivateKey",
    "PublicKey",
    "algorithm_of",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "private_key_pem",
    "public_jwk",
    "sign",
]

Algorithm = Literal["RS256", "EdDSA"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = get_args(Algorithm)
# Measured by bench/verify_bench.py (see the README): RSA-2048 verification (public exponent
# 65537) is several times faster than Ed25519 verification in OpenSSL, and verification is the hot path.
DEFAULT_ALGORITHM: Final[Algorithm] = "RS256"
RSA_KEY_SIZE: Final = 2048

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def generate_private_key(algorithm: Algorithm = DEFAULT_ALGORITHM) -> PrivateKey:
    """A new private key for ``algorithm`` (RSA keys are 2048-bit, public exponent 65537)."""
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")


def algorithm_of(key: PrivateKey | PublicKey) -> Algorithm:
    """The JWS algorithm a key is used with."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    raise TypeError(f"unsupported key type {type(key).__name__}")


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        return key.public_key()
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk_members(public: PublicKey) -> dict[str, str]:
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    numbers = public.public_numbers()
    return {
        "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        "kty": "RSA",
        "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
    }


def key_id(key: PrivateKey | PublicKey) -> str:
    """The RFC 7638 JWK thumbprint of the public key: stable, and unique per key."""
    members = _jwk_members(_public(key))
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


def public_jwk(key: PrivateKey | PublicKey, kid: str | None = None) -> dict[str, str]:
    """The public JWK to publish in the JWKS: key material plus ``kid``, ``alg`` and ``use: sig``."""
    public = _public(key)
    return {
        **_jwk_members(public),
        "kid": kid or key_id(public),
        "alg": algorithm_of(public),
        "use": "sig",
    }


def sign(
    claims: Mapping[str, Any],
    private_key: PrivateKey,
    kid: str,
    *,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWT of ``claims`` signed with ``private_key``; ``kid`` goes in the header."""
    algorithm = algorithm_of(private_key)
    extra = {**(headers or {}), "kid": kid, "typ": "JWT"}
    return jwt.encode(dict(claims), private_key, algorithm=algorithm, headers=extra)


def private_key_pem(private_key: PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: seal it before storing)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Load a PEM private key produced by :func:`private_key_pem`; only Ed25519 and RSA are accepted."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key
