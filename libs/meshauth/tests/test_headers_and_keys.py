"""The principal header protocol and the key helpers identity uses."""

from __future__ import annotations

import time

import jwt
import pytest

from meshauth import (
    InvalidPrincipalHeaders,
    Principal,
    is_identity_header,
    sign_principal,
    strip_identity_headers,
)
from meshauth.headers import PRINCIPAL_HEADERS, strip_identity_meta, verify_principal_headers
from meshauth.keys import (
    ALGORITHMS,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_jwk,
    sign,
)

SECRET = "0123456789abcdef-pod-secret"
CLAIMS = {"sub": "1", "token_use": "access", "scope": "a b", "aud": "orders", "iss": "x", "exp": 1, "iat": 1}


@pytest.mark.parametrize(
    "name",
    [
        "X-Mesh-Principal",
        "x-mesh-principal",
        "X_Mesh_Principal",
        "X-MESH-PRINCIPAL-SIGNATURE",
        "x-mesh-whatever",
        "X-Forwarded-User",
        "X_FORWARDED_USER",
        "X-Remote-User",
        "Remote-User",
        "remote_user",
        "X-Auth-Request-Email",
        "X-Amzn-Oidc-Identity",
        "X-Ms-Client-Principal-Name",
        "X-Jwt-Payload",
    ],
)
def test_identity_headers_are_recognised_in_every_spelling(name: str) -> None:
    assert is_identity_header(name)


@pytest.mark.parametrize(
    "name", ["Authorization", "X-Request-ID", "X-Forwarded-For", "Content-Type", "X-Meshy"]
)
def test_other_headers_are_not_identity_headers(name: str) -> None:
    assert not is_identity_header(name)


def test_strip_helpers() -> None:
    kept = strip_identity_headers({"X_Mesh_Principal": "1", "Accept": "*/*", "Remote-User": "a"})
    assert kept == [("Accept", "*/*")]
    meta: dict[str, object] = {
        "HTTP_X_MESH_PRINCIPAL": "1",
        "HTTP_REMOTE_USER": "a",
        "HTTP_ACCEPT": "*/*",
        "PATH_INFO": "/",
    }
    strip_identity_meta(meta)
    assert meta == {"HTTP_ACCEPT": "*/*", "PATH_INFO": "/"}


def test_principal_headers_round_trip_case_insensitively() -> None:
    headers = sign_principal(Principal.from_claims(CLAIMS), SECRET)
    assert set(headers) == set(PRINCIPAL_HEADERS)
    principal = verify_principal_headers({k.lower(): v for k, v in headers.items()}, SECRET)
    assert principal is not None
    assert (principal.kind, principal.subject, principal.scopes) == ("user", "1", {"a", "b"})
    assert verify_principal_headers({"Accept": "x"}, SECRET) is None


@pytest.mark.parametrize(
    "part", ["X-Mesh-Principal", "X-Mesh-Principal-Timestamp", "X-Mesh-Principal-Signature"]
)
def test_any_tampering_is_detected(part: str) -> None:
    headers = sign_principal(Principal.from_claims(CLAIMS), SECRET)
    headers[part] = headers[part][:-2] + ("00" if not headers[part].endswith("00") else "11")
    with pytest.raises(InvalidPrincipalHeaders):
        verify_principal_headers(headers, SECRET)


def test_old_or_future_headers_are_refused() -> None:
    principal = Principal.from_claims(CLAIMS)
    with pytest.raises(InvalidPrincipalHeaders, match="expired"):
        verify_principal_headers(sign_principal(principal, SECRET, now=time.time() - 31), SECRET)
    with pytest.raises(InvalidPrincipalHeaders, match="expired"):
        verify_principal_headers(sign_principal(principal, SECRET, now=time.time() + 60), SECRET)
    with pytest.raises(InvalidPrincipalHeaders, match="signature"):
        verify_principal_headers(sign_principal(principal, SECRET), "another-secret-of-16+")


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        sign_principal(Principal.from_claims(CLAIMS), "short")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_keys_sign_tokens_their_public_jwk_verifies(algorithm: str) -> None:
    key = generate_private_key(algorithm)  # type: ignore[arg-type]
    kid = key_id(key)
    jwk = public_jwk(key)
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (kid, algorithm, "sig")
    assert "d" not in jwk
    token = sign({"sub": "1"}, key, kid)
    assert jwt.get_unverified_header(token)["kid"] == kid
    public = jwt.PyJWK(jwk).key
    assert jwt.decode(token, public, algorithms=[algorithm])["sub"] == "1"
    assert key_id(load_private_key(private_key_pem(key))) == kid
    assert key_id(generate_private_key(algorithm)) != kid  # type: ignore[arg-type]
