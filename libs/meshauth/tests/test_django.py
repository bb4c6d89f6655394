"""Middleware, decorators and ninja auth through django.test.Client, in both modes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from meshauth.headers import sign_principal
from meshauth.principal import Principal
from meshauth_testkit import PRINCIPAL_SECRET, FakeIdentity, bad_tokens


@pytest.fixture
def inprocess(settings: Any, identity: FakeIdentity) -> FakeIdentity:
    settings.MESHAUTH_MODE = "inprocess"
    settings.MESHAUTH_JWKS_URL = identity.jwks_url
    settings.MESHAUTH_IDENTITY_URL = identity.url
    return identity


@pytest.fixture
def sidecar_mode(settings: Any) -> None:
    settings.MESHAUTH_MODE = "sidecar"
    settings.MESHAUTH_PRINCIPAL_SECRET = PRINCIPAL_SECRET


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def signed(claims: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    headers = sign_principal(Principal.from_claims(claims), PRINCIPAL_SECRET, **kwargs)
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def assert_denied(response: Any, status: int, reason: str, challenge: str | None) -> None:
    assert response.status_code == status
    assert response.json()["reason"] == reason
    assert "detail" in response.json()
    assert response.headers.get("WWW-Authenticate") == challenge


# -- in-process mode -----------------------------------------------------------------------------


def test_anonymous_requests_reach_the_view_without_principal(inprocess: FakeIdentity) -> None:
    response = Client().get("/whoami")
    assert response.json()["kind"] is None


def test_a_valid_token_sets_the_principal(inprocess: FakeIdentity) -> None:
    response = Client().get("/whoami", **bearer(inprocess.token(sub="12")))
    assert response.json()["kind"] == "user"
    assert response.json()["subject"] == "12"


def test_every_bad_token_is_401_even_on_a_public_view(inprocess: FakeIdentity) -> None:
    client = Client()
    for name, (token, reason) in bad_tokens(inprocess).items():
        response = client.get("/whoami", **bearer(token))
        assert response.status_code == 401, name
        assert response.json() == {"detail": response.json()["detail"], "reason": reason}, name
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', name


def test_two_authorization_headers_are_401(inprocess: FakeIdentity) -> None:
    token = inprocess.token()
    # gunicorn joins repeated headers with a comma, which is what Django then sees.
    response = Client().get("/whoami", HTTP_AUTHORIZATION=f"Bearer {token}, Bearer {token}")
    assert_denied(response, 401, "malformed", 'Bearer error="invalid_token"')


def test_identity_headers_are_removed_from_meta(inprocess: FakeIdentity) -> None:
    response = Client().get(
        "/whoami", HTTP_X_MESH_PRINCIPAL="x", HTTP_X_FORWARDED_USER="admin", HTTP_REMOTE_USER="admin"
    )
    assert response.json()["identity_meta"] == []


def test_login_required_answers(inprocess: FakeIdentity) -> None:
    client = Client()
    assert_denied(client.get("/account"), 401, "missing", "Bearer")
    assert_denied(client.get("/account", **bearer(inprocess.service_token())), 403, "user_required", None)
    assert client.get("/account", **bearer(inprocess.token(sub="3"))).json() == {"subject": "3"}
    assert client.get("/async-account", **bearer(inprocess.token(sub="4"))).json() == {"subject": "4"}
    assert_denied(client.get("/async-account"), 401, "missing", "Bearer")


def test_login_required_scopes(inprocess: FakeIdentity) -> None:
    client = Client()
    before = REGISTRY.get_sample_value(
        "meshauth_auth_decisions_total",
        {"mode": "inprocess", "result": "forbidden", "reason": "insufficient_scope"},
    )
    response = client.get("/orders", **bearer(inprocess.token(scope="profile")))
    assert_denied(
        response, 403, "insufficient_scope", 'Bearer error="insufficient_scope", scope="orders:write"'
    )
    after = REGISTRY.get_sample_value(
        "meshauth_auth_decisions_total",
        {"mode": "inprocess", "result": "forbidden", "reason": "insufficient_scope"},
    )
    assert after == (before or 0) + 1
    assert client.get("/orders", **bearer(inprocess.token(scope="orders:write"))).status_code == 200


def test_profile_is_fetched_from_identity_and_cached(inprocess: FakeIdentity) -> None:
    client = Client()
    token = inprocess.token(sub="21")
    for _ in range(3):
        response = client.get("/profile", **bearer(token))
        assert response.json() == {"profile": {"id": "21", "email": "user21@example.test"}}
    assert inprocess.me_hits == 1


def test_profile_with_identity_down_is_503_not_500(inprocess: FakeIdentity) -> None:
    token = inprocess.token(sub="22")
    assert Client().get("/whoami", **bearer(token)).status_code == 200  # keys cached
    inprocess.stop()
    response = Client().get("/profile", **bearer(token))
    assert response.status_code == 503
    assert response.json()["reason"] == "profile_unavailable"


def test_service_required_answers(inprocess: FakeIdentity) -> None:
    client = Client()
    assert_denied(client.get("/reserve"), 401, "missing", "Bearer")
    assert_denied(client.get("/reserve", **bearer(inprocess.token())), 403, "service_required", None)
    response = client.get("/reserve", **bearer(inprocess.service_token(scope="catalog:reserve")))
    assert response.json() == {"client": "catalog"}
    response = client.get("/reserve", **bearer(inprocess.service_token(scope="")))
    assert_denied(
        response, 403, "insufficient_scope", 'Bearer error="insufficient_scope", scope="catalog:reserve"'
    )
    assert_denied(client.get("/internal", **bearer(inprocess.service_token())), 403, "wrong_audience", None)
    token = inprocess.service_token(aud=["orders", "orders-internal"])
    assert client.get("/internal", **bearer(token)).status_code == 200


def test_ninja_auth_gives_the_same_answers(inprocess: FakeIdentity) -> None:
    client = Client()
    assert_denied(client.get("/api/v1/me"), 401, "missing", "Bearer")
    assert_denied(client.get("/api/v1/me", **bearer(inprocess.service_token())), 403, "user_required", None)
    assert client.get("/api/v1/me", **bearer(inprocess.token(sub="31"))).json() == {"subject": "31"}
    response = client.post("/api/v1/orders", **bearer(inprocess.token(scope="profile")))
    assert_denied(
        response, 403, "insufficient_scope", 'Bearer error="insufficient_scope", scope="orders:write"'
    )
    assert client.post("/api/v1/orders", **bearer(inprocess.token(scope="orders:write"))).status_code == 200
    assert_denied(
        client.post("/api/v1/reservations", **bearer(inprocess.token())), 403, "service_required", None
    )
    response = client.post("/api/v1/reservations", **bearer(inprocess.service_token()))
    assert response.json() == {"client": "catalog"}
    response = client.get("/api/v1/me", **bearer("not-a-token"))
    assert_denied(response, 401, "malformed", 'Bearer error="invalid_token"')


def test_settings_overrides_are_picked_up(inprocess: FakeIdentity, settings: Any) -> None:
    token = inprocess.token()
    assert Client().get("/whoami", **bearer(token)).status_code == 200
    settings.MESHAUTH_AUDIENCE = "catalog"
    assert_denied(
        Client().get("/whoami", **bearer(token)), 401, "wrong_audience", 'Bearer error="invalid_token"'
    )


def test_settings_fall_back_to_the_environment(
    inprocess: FakeIdentity, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    del settings.MESHAUTH_AUDIENCE
    monkeypatch.setenv("MESHAUTH_AUDIENCE", "catalog,orders")
    assert Client().get("/whoami", **bearer(inprocess.token(aud="catalog"))).status_code == 200


# -- sidecar mode --------------------------------------------------------------------------------


def test_sidecar_mode_trusts_signed_principal_headers(sidecar_mode: None, identity: FakeIdentity) -> None:
    response = Client().get("/account", **signed(identity.claims(sub="55")))
    assert response.json() == {"subject": "55"}
    response = Client().get(
        "/reserve",
        **signed(
            identity.claims(
                token_use="service", scope="catalog:reserve", client_id="catalog", sub="service:catalog"
            )
        ),
    )
    assert response.json() == {"client": "catalog"}


def test_sidecar_mode_ignores_bearer_tokens(sidecar_mode: None, identity: FakeIdentity) -> None:
    # Only the sidecar authenticates in this mode; a token without its headers is anonymous.
    assert Client().get("/whoami", **bearer(identity.token())).json()["kind"] is None


def test_sidecar_mode_rejects_forged_or_stale_headers(sidecar_mode: None, identity: FakeIdentity) -> None:
    client = Client()
    good = signed(identity.claims(sub="55"))
    forged = {**good, "HTTP_X_MESH_PRINCIPAL": signed(identity.claims(sub="1"))["HTTP_X_MESH_PRINCIPAL"]}
    stale = signed(identity.claims(sub="55"), now=time.time() - 120)
    partial = {"HTTP_X_MESH_PRINCIPAL": good["HTTP_X_MESH_PRINCIPAL"]}
    for headers in (forged, stale, partial):
        assert_denied(client.get("/whoami", **headers), 401, "bad_signature", 'Bearer error="invalid_token"')


def test_sidecar_mode_without_headers_is_anonymous_and_strips_spoofs(sidecar_mode: None) -> None:
    response = Client().get("/whoami", HTTP_X_FORWARDED_USER="admin", HTTP_X_REMOTE_USER="admin")
    assert response.json() == {"kind": None, "subject": None, "identity_meta": []}
    assert_denied(Client().get("/account"), 401, "missing", "Bearer")


def test_sidecar_mode_requires_a_secret(settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from meshauth.django.conf import get_settings

    settings.MESHAUTH_MODE = "sidecar"
    settings.MESHAUTH_PRINCIPAL_SECRET = ""
    with pytest.raises(ImproperlyConfigured, match="MESHAUTH_PRINCIPAL_SECRET"):
        get_settings()
