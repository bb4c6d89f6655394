"""Sign-up through the public JSON API, against the service's real PostgreSQL schema."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from identity.accounts.models import User

pytestmark = pytest.mark.django_db

SIGNUP = "/api/v1/auth/signup"
GOOD_PASSWORD = "correct horse battery staple"


def post(client: Client, body: object, **extra: str):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(SIGNUP, data=data, content_type="application/json", **extra)


def test_signup_creates_account_with_hashed_password(client: Client) -> None:
    response = post(client, {"email": "Alice@Example.com", "password": GOOD_PASSWORD})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email"] == "alice@example.com"
    user = User.objects.get(pk=body["id"])
    assert user.password.startswith("argon2$")
    assert user.check_password(GOOD_PASSWORD)


def test_taken_email_is_409_in_any_case(client: Client) -> None:
    assert post(client, {"email": "bob@example.com", "password": GOOD_PASSWORD}).status_code == 201
    again = post(client, {"email": "BOB@example.com", "password": GOOD_PASSWORD})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    assert User.objects.filter(email__iexact="bob@example.com").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": GOOD_PASSWORD}, "email"),
        ({"email": "carol@example.com", "password": "short"}, "password"),
        ({"email": "carol@example.com", "password": "12345678901"}, "password"),
        ({"email": "carol@example.com", "password": "password123"}, "password"),
        ({"email": "carol@example.com"}, "password"),
        ({"email": 12, "password": GOOD_PASSWORD}, "email"),
        ({"email": "carol@example.com", "password": ["a", "list"]}, "password"),
    ],
)
def test_bad_signup_is_400_with_field_errors_and_writes_nothing(
    client: Client, body: dict[str, object], field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not User.objects.exists()


@pytest.mark.parametrize("raw", ["{not json", "", "[]", "null", '"a string"'])
def test_malformed_json_is_400_not_500(client: Client, raw: str) -> None:
    response = post(client, raw)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert not User.objects.exists()


def test_oversized_body_is_413_and_writes_nothing(client: Client, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = {"email": "dave@example.com", "password": GOOD_PASSWORD, "name": "x" * 20_000}
    response = post(client, body)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    assert not User.objects.exists()


def test_unknown_api_path_is_json_404(client: Client) -> None:
    response = client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["detail"]


def test_openapi_document_describes_signup(client: Client) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/auth/signup" in document["paths"]
    assert client.get("/api/v1/docs").status_code == 200
