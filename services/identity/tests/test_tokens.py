"""Login, refresh rotation with reuse detection, logout, service tokens, JWKS and rotation."""

from __future__ import annotations

import datetime
import json

import jwt
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from identity.accounts.models import User
from identity.tokens.models import LoginFailure, RefreshToken, ServiceClient, SigningKey

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def post(client: Client, path: str, body: object, **extra: str):
    return client.post(f"/api/v1/{path}", data=json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice@example.com", PASSWORD, name="Alice")


def login(client: Client, email: str = "alice@example.com", password: str = PASSWORD, **extra: str):
    return post(client, "auth/token", {"email": email, "password": password}, **extra)


def decode(token: str, client: Client) -> dict:
    """Verify a token the way any service would: against the published JWKS."""
    header = jwt.get_unverified_header(token)
    jwks = client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(key).key
    return jwt.decode(token, public, algorithms=[key["alg"]], audience="mesh", issuer="http://127.0.0.1:8001")


def test_login_returns_a_signed_access_token_and_a_refresh_token(client: Client, alice: User) -> None:
    response = login(client)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 300 <= body["expires_in"] <= 900
    claims = decode(body["access_token"], client)
    assert claims["sub"] == str(alice.pk)
    assert claims["scope"] == "profile"
    assert claims["token_use"] == "access"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert {"nbf", "jti"} <= set(claims)
    assert RefreshToken.objects.get().token_hash != body["refresh_token"]  # stored hashed


def test_staff_tokens_may_write_the_catalog(client: Client) -> None:
    User.objects.create_user("staff@example.com", PASSWORD, is_staff=True)
    claims = decode(login(client, "staff@example.com").json()["access_token"], client)
    assert claims["scope"].split() == ["profile", "catalog:write"]


def test_wrong_password_and_unknown_email_get_the_same_answer(client: Client, alice: User) -> None:
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Invalid email or password."}


def test_refresh_rotates_and_reuse_revokes_the_family(client: Client, alice: User) -> None:
    first = login(client).json()["refresh_token"]
    rotated = post(client, "auth/refresh", {"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    assert decode(rotated.json()["access_token"], client)["sub"] == str(alice.pk)

    replay = post(client, "auth/refresh", {"refresh_token": first})
    assert replay.status_code == 401
    assert "reuse detected" in replay.json()["detail"]
    # The legitimate holder's newer token died with the family.
    assert post(client, "auth/refresh", {"refresh_token": second}).status_code == 401
    assert not RefreshToken.objects.filter(revoked_at__isnull=True).exists()


def test_logout_revokes_the_session(client: Client, alice: User) -> None:
    refresh = login(client).json()["refresh_token"]
    assert post(client, "auth/logout", {"refresh_token": refresh}).status_code == 204
    assert post(client, "auth/refresh", {"refresh_token": refresh}).status_code == 401
    assert post(client, "auth/logout", {"refresh_token": "nonsense"}).status_code == 401


def test_failed_logins_are_limited_per_account_with_retry_after(client: Client, alice: User) -> None:
    for _ in range(5):
        assert login(client, password="guess").status_code == 401
    blocked = login(client)  # even the right password waits now
    assert blocked.status_code == 429
    assert 1 <= int(blocked["Retry-After"]) <= 15 * 60
    # Another account from the same address is not blocked.
    User.objects.create_user("bob@example.com", PASSWORD)
    assert login(client, "bob@example.com").status_code == 200


def test_failed_logins_are_limited_per_address(client: Client, alice: User, settings) -> None:
    settings.IDENTITY_LOGIN_ADDRESS_ATTEMPTS = 3
    for index in range(3):
        assert login(client, email=f"ghost{index}@example.com").status_code == 401
    assert login(client).status_code == 429
    assert login(client, REMOTE_ADDR="10.9.9.9").status_code == 200


def test_many_successful_logins_from_one_address_are_not_throttled(client: Client, alice: User) -> None:
    for _ in range(60):
        assert login(client).status_code == 200
    assert not LoginFailure.objects.exists()


def test_spoofed_forwarded_for_does_not_escape_the_address_limit(
    client: Client, alice: User, settings
) -> None:
    settings.IDENTITY_TRUSTED_PROXY_HOPS = 1
    settings.IDENTITY_LOGIN_ADDRESS_ATTEMPTS = 2
    for index in range(2):
        login(client, email=f"x{index}@example.com", HTTP_X_FORWARDED_FOR=f"1.1.1.{index}, 10.0.0.5")
    # The client rewrote the left part; the sidecar's entry (the right one) is what counts.
    assert login(client, HTTP_X_FORWARDED_FOR="2.2.2.2, 10.0.0.5").status_code == 429


@pytest.fixture
def orders_client() -> str:
    call_command(
        "create_service_client", "orders", "--audience", "catalog", "--secret-env", "ORDERS_SECRET_FOR_TEST"
    )
    return "orders"


@pytest.fixture(autouse=True)
def _client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_SECRET_FOR_TEST", "orders-secret-for-tests")


def test_service_token_names_the_target_service(client: Client, orders_client: str) -> None:
    response = post(
        client,
        "auth/service-token",
        {"client_id": "orders", "client_secret": "orders-secret-for-tests", "audience": "catalog"},
    )
    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["kid"] in {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert claims["aud"] == "catalog"
    assert claims["token_use"] == "service"
    assert claims["client_id"] == "orders"
    assert not ServiceClient.objects.get().secret_hash.endswith("orders-secret-for-tests")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"client_id": "orders", "client_secret": "wrong-secret", "audience": "catalog"}, 401),
        ({"client_id": "nobody", "client_secret": "orders-secret-for-tests", "audience": "catalog"}, 401),
        ({"client_id": "orders", "client_secret": "orders-secret-for-tests", "audience": "identity"}, 403),
    ],
)
def test_bad_client_credentials(client: Client, orders_client: str, body: dict, status: int) -> None:
    assert post(client, "auth/service-token", body).status_code == status


def kids(client: Client) -> set[str]:
    return {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}


def test_rotation_publishes_first_signs_later_and_keeps_old_tokens(client: Client, alice: User) -> None:
    old_token = login(client).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    call_command("rotate_signing_key")  # published now, signs after the activation delay
    (new_kid,) = kids(client) - {old_kid}
    assert jwt.get_unverified_header(login(client).json()["access_token"])["kid"] == old_kid

    # The activation delay passes.
    past = timezone.now() - datetime.timedelta(seconds=1)
    SigningKey.objects.filter(kid=new_kid).update(activates_at=past)
    SigningKey.objects.filter(kid=old_kid).update(retired_at=past)
    new_token = login(client).json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert {old_kid, new_kid} <= kids(client)
    assert decode(old_token, client)["sub"] == decode(new_token, client)["sub"]
    # After the overlap the old key leaves the JWKS.
    SigningKey.objects.filter(kid=old_kid).update(publish_until=past)
    assert kids(client) == {new_kid}


def test_encrypted_keys_need_the_encryption_key(client: Client, alice: User, settings) -> None:
    from cryptography.fernet import Fernet

    settings.IDENTITY_KEY_ENCRYPTION_KEY = Fernet.generate_key().decode()
    call_command("rotate_signing_key", "--activate-after", "0")
    assert SigningKey.objects.filter(retired_at__isnull=True).get().private_key.startswith("fernet:")
    assert login(client).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "a@b.c"}, {"email": ["x"], "password": "p"}, {"email": "a@b.c", "password": "x" * 129}],
)
def test_bad_login_bodies_are_400(client: Client, body: dict) -> None:
    response = post(client, "auth/token", body)
    assert response.status_code == 400
    assert "errors" in response.json()
