"""Validly signed tokens with claims of the wrong shape: a 401, never a 5xx in a view downstream.

A `sub` of 201 characters once reached orders' 200-character column and failed the order with a 500.
Forging these needs identity's signing key, but a bug in a signer or a stolen key must not turn into
server errors: the verifier checks shapes, not just signatures.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import SidecarProcess
from meshauth import InvalidToken, Verifier
from meshauth_testkit import AUDIENCE, ISSUER, FakeIdentity, Upstream

BAD_SHAPES: dict[str, dict[str, Any]] = {
    "sub_201_chars": {"sub": "7" * 201},
    "sub_huge": {"sub": "x" * 5000},
    "sub_with_nul": {"sub": "4\x002"},
    "sub_with_newline": {"sub": "42\nadmin"},
    "sub_number": {"sub": 42},
    "sub_list": {"sub": ["42"]},
    "sub_object": {"sub": {"id": 42}},
    "client_id_list": {"client_id": ["a", "b"]},
    "client_id_201_chars": {"client_id": "c" * 201},
    "client_id_with_nul": {"client_id": "orders\x00"},
    "jti_number": {"jti": 12345},
    "jti_huge": {"jti": "j" * 1000},
    "scope_list": {"scope": ["profile", "orders:read"]},
    "scope_huge": {"scope": "s " * 2100},
    "scope_with_control": {"scope": "profile\x07"},
    "token_use_number": {"token_use": 1},
}


def verifier_for(identity: FakeIdentity) -> Verifier:
    return Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=identity.jwks_url)


@pytest.mark.parametrize("name", sorted(BAD_SHAPES))
def test_the_verifier_rejects_claims_of_the_wrong_shape(identity: FakeIdentity, name: str) -> None:
    verifier = verifier_for(identity)
    token = identity.token(**BAD_SHAPES[name])
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason in ("malformed", "missing_claim")
    verifier.close()


def test_shapes_at_the_limits_are_accepted(identity: FakeIdentity) -> None:
    verifier = verifier_for(identity)
    principal = verifier.verify(identity.token(sub="7" * 200, client_id="c" * 200, jti="j" * 200))
    assert principal.subject == "7" * 200
    verifier.close()


def test_the_sidecar_answers_401_for_every_bad_shape(
    sidecar: SidecarProcess, identity: FakeIdentity, upstream: Upstream
) -> None:
    answers = {}
    for name, claims in BAD_SHAPES.items():
        response = httpx.get(
            f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {identity.token(**claims)}"}
        )
        answers[name] = (response.status_code, response.headers.get("WWW-Authenticate"))
    assert answers == {name: (401, 'Bearer error="invalid_token"') for name in BAD_SHAPES}
    assert upstream.hits == 0
