"""A short mixed workload against a running fleet: what the dashboards and rules need to show data.

Per service of the fleet (whatever `mesh.toml` lists): good requests, a 404 no route matches, a
request refused for oversized headers, and bearer tokens that are rejected. Where the fleet has
them: sign-up and logins (good and bad) at identity, the catalog, and orders placed through
orders → catalog (one that succeeds, one for an unknown product). Every request goes through the
public port, so through the sidecar, as a client's would.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from mesh.fleet import Fleet

__all__ = ["Workload", "drive"]

PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway user of a test database
# Larger than the sidecar's header limit (MESHAUTH_SIDECAR_MAX_HEADER_BYTES, 32 KiB by default).
OVERSIZED_HEADER = "x" * 40_000


@dataclass
class Workload:
    """What was sent: status codes seen per service, and the user token (if identity runs)."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    token: str | None = None

    def record(self, service: str, response: httpx.Response) -> httpx.Response:
        self.statuses.setdefault(service, Counter())[response.status_code] += 1
        return response


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tampered(token: str) -> str:
    # Same header and claims, another signature: rejected as bad_signature, not as malformed.
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{body}.{flipped}"


def _identity(fleet: Fleet, client: httpx.Client, work: Workload) -> None:
    base = fleet.url("identity")
    email = f"observer-{uuid.uuid4().hex[:10]}@example.com"
    work.record(
        "identity", client.post(f"{base}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    )
    bad = {"email": email, "password": "not the password"}
    work.record("identity", client.post(f"{base}/api/v1/auth/token", json=bad))
    login = work.record(
        "identity", client.post(f"{base}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    )
    if login.status_code == 200:
        work.token = login.json()["access_token"]


def _catalog(fleet: Fleet, client: httpx.Client, work: Workload) -> list[str]:
    base = fleet.url("catalog")
    products = work.record("catalog", client.get(f"{base}/api/v1/products"))
    work.record("catalog", client.get(f"{base}/api/v1/products/NO-SUCH-SKU"))
    if products.status_code != 200:
        return []
    return [item["sku"] for item in products.json().get("items", [])]


def _orders(fleet: Fleet, client: httpx.Client, work: Workload, skus: list[str]) -> None:
    if not work.token or not skus:
        return
    base = fleet.url("orders")
    headers = _bearer(work.token)
    for items in ([{"sku": skus[0], "qty": 1}], [{"sku": "NO-SUCH-SKU", "qty": 1}]):
        work.record(
            "orders",
            client.post(
                f"{base}/api/v1/orders",
                json={"items": items},
                headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            ),
        )
    work.record("orders", client.get(f"{base}/api/v1/orders", headers=headers))


def _every_service(fleet: Fleet, client: httpx.Client, work: Workload) -> None:
    for service in fleet.services:
        base = fleet.url(service.name)
        openapi = f"{base}/api/v1/openapi.json"
        work.record(service.name, client.get(openapi))
        work.record(service.name, client.get(f"{base}/no-such-page/{uuid.uuid4().hex[:6]}"))
        work.record(service.name, client.get(openapi, headers={"X-Padding": OVERSIZED_HEADER}))
        work.record(service.name, client.get(openapi, headers=_bearer("not-a-jwt")))
        if work.token:
            work.record(service.name, client.get(openapi, headers=_bearer(work.token)))
            work.record(service.name, client.get(openapi, headers=_bearer(_tampered(work.token))))


def drive(fleet: Fleet, rounds: int = 1, client: httpx.Client | None = None) -> Workload:
    """Send the mixed workload ``rounds`` times; return what came back."""
    work = Workload()
    names = {service.name for service in fleet.services}
    own = client is None
    client = client or httpx.Client(timeout=30.0)
    try:
        for _ in range(rounds):
            if "identity" in names:
                _identity(fleet, client, work)
            skus = _catalog(fleet, client, work) if "catalog" in names else []
            if "orders" in names:
                _orders(fleet, client, work, skus)
            _every_service(fleet, client, work)
    finally:
        if own:
            client.close()
    return work


def summary(work: Workload) -> dict[str, Any]:
    """``{service: {status: count}}`` for messages."""
    return {service: dict(sorted(counts.items())) for service, counts in work.statuses.items()}
