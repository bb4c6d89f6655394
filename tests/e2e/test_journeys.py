"""The mesh as a client meets it: identity, catalog and orders as real gunicorn processes (behind their
sidecars, or verifying in-process), real HTTP between them, real PostgreSQL underneath."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal

import httpx
import jwt
import pytest

from conftest import bearer, signup_and_login
from mesh.fleet import Fleet


def stock(mesh: Fleet, sku: str) -> int:
    response = httpx.get(f"{mesh.url('catalog')}/api/v1/products/{sku}")
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])


def test_tokens_flow_signup_login_call_refresh_reuse_logout(mesh: Fleet) -> None:
    user = signup_and_login(mesh)
    identity, orders = mesh.url("identity"), mesh.url("orders")

    assert httpx.get(f"{orders}/api/v1/orders", headers=bearer(user["access_token"])).status_code == 200
    me = httpx.get(f"{identity}/api/v1/me", headers=bearer(user["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == user["email"]

    rotated = httpx.post(f"{identity}/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert rotated.status_code == 200
    fresh = rotated.json()
    assert httpx.get(f"{orders}/api/v1/orders", headers=bearer(fresh["access_token"])).status_code == 200

    reused = httpx.post(f"{identity}/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert reused.status_code == 401
    assert "reuse" in reused.json()["detail"]
    # Reuse revoked the family: the newest refresh token is dead too.
    dead = httpx.post(f"{identity}/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert dead.status_code == 401

    again = signup_and_login(mesh, email=f"again-{uuid.uuid4().hex[:6]}@example.com")
    assert (
        httpx.post(
            f"{identity}/api/v1/auth/logout", json={"refresh_token": again["refresh_token"]}
        ).status_code
        == 204
    )
    gone = httpx.post(f"{identity}/api/v1/auth/refresh", json={"refresh_token": again["refresh_token"]})
    assert gone.status_code == 401


def test_order_journey_reserves_stock_lists_names_and_is_idempotent(mesh: Fleet) -> None:
    user = signup_and_login(mesh)
    catalog, orders = mesh.url("catalog"), mesh.url("orders")
    products = httpx.get(f"{catalog}/api/v1/products").json()["items"]
    product = next(p for p in products if p["stock"] >= 5)
    before = stock(mesh, product["sku"])

    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"items": [{"sku": product["sku"], "qty": 2}]}
    placed = httpx.post(f"{orders}/api/v1/orders", json=body, headers={**bearer(user["access_token"]), **key})
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "confirmed"
    assert Decimal(order["total"]) == Decimal(product["price"]) * 2
    assert stock(mesh, product["sku"]) == before - 2

    listed = httpx.get(f"{orders}/api/v1/orders", headers=bearer(user["access_token"])).json()["items"]
    assert [o["id"] for o in listed] == [order["id"]]
    assert listed[0]["items"][0]["name"] == product["name"]  # read from catalog's table, read-only

    replay = httpx.post(f"{orders}/api/v1/orders", json=body, headers={**bearer(user["access_token"]), **key})
    assert replay.status_code in (200, 201)
    assert replay.json()["id"] == order["id"]
    assert stock(mesh, product["sku"]) == before - 2

    other = signup_and_login(mesh)
    assert (
        httpx.get(f"{orders}/api/v1/orders/{order['id']}", headers=bearer(other["access_token"])).status_code
        == 404
    )


def forged(token: str, **header: object) -> str:
    """The token with its header replaced (signature kept): what an attacker can send."""
    _, payload, signature = token.split(".")
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{head}.{payload}.{signature}"


def test_bad_tokens_are_401_and_never_5xx(mesh: Fleet) -> None:
    user = signup_and_login(mesh)
    token = user["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered = base64.urlsafe_b64encode(json.dumps({**claims, "scope": "profile catalog:write"}).encode())
    bad = {
        "alg none": forged(token, alg="none", kid=kid),
        "jku header": forged(token, alg="RS256", kid=kid, jku="http://127.0.0.1:1/jwks.json"),
        "unknown kid": forged(token, alg="RS256", kid="nope"),
        "tampered payload": f"{head}.{tampered.rstrip(b'=').decode()}.{signature}",
        "tampered signature": f"{head}.{payload}.{signature[:-4]}AAAA",
        "not three segments": "abc.def",
        "100 kB": "a" * 100_000,
    }
    for name, value in bad.items():
        response = httpx.get(f"{mesh.url('orders')}/api/v1/orders", headers=bearer(value))
        assert response.status_code == 401, f"{name}: {response.status_code} {response.text[:200]}"


def test_spoofed_principal_headers_are_ignored(mesh: Fleet) -> None:
    spoofed = {
        "X-Mesh-Principal": "eyJzdWIiOiAiMSJ9",
        "X_Mesh_Principal_Signature": "v1=00",
        "Remote-User": "1",
    }
    response = httpx.get(f"{mesh.url('orders')}/api/v1/orders", headers=spoofed)
    assert response.status_code == 401


def test_service_and_user_tokens_are_not_interchangeable(mesh: Fleet) -> None:
    user = signup_and_login(mesh)
    secret = mesh.client_credentials()["orders"]["secret"]
    service = httpx.post(
        f"{mesh.url('identity')}/api/v1/auth/service-token",
        json={"client_id": "orders", "client_secret": secret, "audience": "catalog"},
    )
    assert service.status_code == 200, service.text
    service_token = service.json()["access_token"]
    reservation = {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "nope", "qty": 1}]}
    as_user = httpx.post(
        f"{mesh.url('catalog')}/api/v1/reservations", json=reservation, headers=bearer(user["access_token"])
    )
    assert as_user.status_code == 403
    as_service = httpx.get(f"{mesh.url('orders')}/api/v1/orders", headers=bearer(service_token))
    # A service token for catalog is not even addressed to orders.
    assert as_service.status_code in (401, 403)
    me = httpx.get(f"{mesh.url('identity')}/api/v1/me", headers=bearer(service_token))
    assert me.status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"items": [{"sku": "MUG-001", "qty": 1}]}, {}, 400),  # no Idempotency-Key
        ({"items": [{"sku": "MUG-001", "qty": 0}]}, {"Idempotency-Key": "k-qty"}, 400),
        ({"items": [{"sku": "NOPE-404", "qty": 1}]}, {"Idempotency-Key": "k-unknown"}, 400),
        ({"items": "many"}, {"Idempotency-Key": "k-type"}, 400),
    ],
)
def test_bad_orders_are_4xx_and_store_nothing(mesh: Fleet, body: dict, headers: dict, status: int) -> None:
    user = signup_and_login(mesh)
    response = httpx.post(
        f"{mesh.url('orders')}/api/v1/orders", json=body, headers={**bearer(user["access_token"]), **headers}
    )
    assert response.status_code == status, response.text
    listed = httpx.get(f"{mesh.url('orders')}/api/v1/orders", headers=bearer(user["access_token"]))
    assert listed.json()["count"] == 0
