"""A valid but huge order (catalog's largest price x 101) is a 422 naming the limit, not a 503 that
invites retries that can never succeed; its stock is given back. Both auth modes, real HTTP."""

from __future__ import annotations

import uuid

import httpx
from securitylib import bearer, signup_and_login, staff_token

from mesh.fleet import Fleet


def test_an_order_larger_than_storage_is_422_and_holds_no_stock(mesh: Fleet) -> None:
    catalog, orders = mesh.url("catalog"), mesh.url("orders")
    sku = f"GOLD-{uuid.uuid4().hex[:8]}"
    product = {"sku": sku, "name": "Gold bar", "price": "99999999.99", "stock": 500}
    made = httpx.post(f"{catalog}/api/v1/products", json=product, headers=bearer(staff_token(mesh)))
    assert made.status_code == 201, made.text
    user = signup_and_login(mesh)
    headers = {**bearer(user.access_token), "Idempotency-Key": uuid.uuid4().hex}
    answer = httpx.post(
        f"{orders}/api/v1/orders", json={"items": [{"sku": sku, "qty": 101}]}, headers=headers, timeout=30
    )
    assert answer.status_code == 422, answer.text
    assert "Retry-After" not in answer.headers
    assert "9,999,999,999.99" in answer.json()["detail"]
    assert httpx.get(f"{catalog}/api/v1/products/{sku}").json()["stock"] == 500
    assert httpx.get(f"{orders}/api/v1/orders", headers=bearer(user.access_token)).json()["count"] == 0
