"""The caller's profile and token introspection, verified in-process against identity's own keys."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

from identity.accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


def post(client: Client, path: str, body: object, **extra: str):
    return client.post(f"/api/v1/{path}", data=json.dumps(body), content_type="application/json", **extra)


def access_token(client: Client, email: str = "alice@example.com") -> str:
    response = post(client, "auth/token", {"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user(
        "alice@example.com", PASSWORD, name="Alice", cv_details="10 years of Django"
    )


@pytest.fixture
def service_token(client: Client, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REPORTS_SECRET", "reports-secret-for-tests")
    call_command(
        "create_service_client",
        "reports",
        "--audience",
        "identity",
        "--introspect",
        "--secret-env",
        "REPORTS_SECRET",
    )
    body = {"client_id": "reports", "client_secret": "reports-secret-for-tests", "audience": "identity"}
    response = post(client, "auth/service-token", body)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


def test_me_needs_a_token(client: Client) -> None:
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_me_returns_and_updates_the_callers_profile(client: Client, alice: User) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {access_token(client)}"}
    assert client.get("/api/v1/me", **auth).json()["name"] == "Alice"
    patched = client.patch(
        "/api/v1/me", data=json.dumps({"bio": "Writes Django"}), content_type="application/json", **auth
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["bio"] == "Writes Django"
    assert patched.json()["name"] == "Alice"
    alice.refresh_from_db()
    assert alice.bio == "Writes Django"


def test_bad_profile_patch_is_400_and_changes_nothing(client: Client, alice: User) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {access_token(client)}"}
    response = client.patch(
        "/api/v1/me", data=json.dumps({"name": "x" * 151}), content_type="application/json", **auth
    )
    assert response.status_code == 400
    alice.refresh_from_db()
    assert alice.name == "Alice"


def test_invalid_token_is_401_invalid_token(client: Client) -> None:
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_service_token_cannot_read_a_profile(client: Client, service_token: str) -> None:
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {service_token}").status_code == 403


def test_introspection_answers_service_callers_only(client: Client, alice: User, service_token: str) -> None:
    user_token = access_token(client)
    as_user = post(
        client, "auth/introspect", {"token": user_token}, HTTP_AUTHORIZATION=f"Bearer {user_token}"
    )
    assert as_user.status_code == 403

    answer = post(
        client,
        "auth/introspect",
        {"token": user_token, "include_profile": True},
        HTTP_AUTHORIZATION=f"Bearer {service_token}",
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["active"] is True
    assert body["user_id"] == alice.pk
    assert body["scope"] == "profile"
    assert body["personal_info"]["cv_details"] == "10 years of Django"

    bogus = post(client, "auth/introspect", {"token": "x.y.z"}, HTTP_AUTHORIZATION=f"Bearer {service_token}")
    assert bogus.json() == {"active": False, "user_id": None, "scope": None, "personal_info": None}


def test_introspection_of_a_disabled_account_is_inactive(
    client: Client, alice: User, service_token: str
) -> None:
    user_token = access_token(client)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    answer = post(
        client, "auth/introspect", {"token": user_token}, HTTP_AUTHORIZATION=f"Bearer {service_token}"
    )
    assert answer.json()["active"] is False


@pytest.mark.parametrize("ending", ["logout", "reuse"])
def test_introspection_of_an_ended_session_is_inactive(
    client: Client, alice: User, service_token: str, ending: str
) -> None:
    tokens = post(client, "auth/token", {"email": "alice@example.com", "password": PASSWORD}).json()
    other_session = access_token(client)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {service_token}"}
    assert post(client, "auth/introspect", {"token": tokens["access_token"]}, **auth).json()["active"] is True
    if ending == "logout":
        assert post(client, "auth/logout", {"refresh_token": tokens["refresh_token"]}).status_code == 204
    else:
        # A spent refresh token presented again revokes its whole session.
        assert post(client, "auth/refresh", {"refresh_token": tokens["refresh_token"]}).status_code == 200
        assert post(client, "auth/refresh", {"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert (
        post(client, "auth/introspect", {"token": tokens["access_token"]}, **auth).json()["active"] is False
    )
    # Only that session ended: the same user's other login is still active.
    assert post(client, "auth/introspect", {"token": other_session}, **auth).json()["active"] is True


def test_a_rotated_sessions_new_access_token_stays_active(
    client: Client, alice: User, service_token: str
) -> None:
    tokens = post(client, "auth/token", {"email": "alice@example.com", "password": PASSWORD}).json()
    rotated = post(client, "auth/refresh", {"refresh_token": tokens["refresh_token"]}).json()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {service_token}"}
    for token in (tokens["access_token"], rotated["access_token"]):
        assert post(client, "auth/introspect", {"token": token}, **auth).json()["active"] is True
