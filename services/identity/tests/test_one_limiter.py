"""One failed-login budget for every door that checks a password, and one spelling per address."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from identity.accounts.models import User
from identity.tokens.models import LoginFailure

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
KELVIN = "\u212a"  # KELVIN SIGN, which NFKC folds to "K"


def api_login(client: Client, email: str, password: str):
    body = json.dumps({"email": email, "password": password})
    return client.post("/api/v1/auth/token", data=body, content_type="application/json")


def admin_login(client: Client, email: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": email, "password": password})


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("root@example.com", PASSWORD, is_staff=True, is_superuser=True)


def test_the_admin_login_works_with_the_right_password(client: Client, staff: User) -> None:
    response = admin_login(client, "root@example.com", PASSWORD)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_an_account_locked_through_the_api_is_locked_at_the_admin(client: Client, staff: User) -> None:
    for _ in range(5):
        assert api_login(client, "root@example.com", "guess").status_code == 401
    response = admin_login(client, "root@example.com", PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert b"Too many failed logins" in response.content
    assert client.get("/admin/").status_code == 302  # still the login page: no session


def test_admin_failures_count_against_the_api(client: Client, staff: User) -> None:
    for _ in range(5):
        assert admin_login(client, "Root@Example.com", "guess").status_code == 200  # the form again
    assert api_login(client, "root@example.com", PASSWORD).status_code == 429


def test_a_successful_login_takes_its_own_attempt_back(client: Client, staff: User) -> None:
    assert api_login(client, "root@example.com", PASSWORD).status_code == 200
    assert admin_login(client, "root@example.com", PASSWORD).status_code == 302
    assert not LoginFailure.objects.exists()


def test_the_kelvin_sign_spells_the_same_address(client: Client) -> None:
    signup = {"email": "kelvin@example.com", "password": PASSWORD}
    post = json.dumps
    assert (
        client.post("/api/v1/auth/signup", post(signup), content_type="application/json").status_code == 201
    )
    twin = {**signup, "email": f"{KELVIN}elvin@example.com"}
    again = client.post("/api/v1/auth/signup", post(twin), content_type="application/json")
    assert again.status_code == 409
    assert User.objects.count() == 1
    assert api_login(client, f"{KELVIN}ELVIN@EXAMPLE.COM", PASSWORD).status_code == 200
