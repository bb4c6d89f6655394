"""The mesh behind PgBouncer in transaction mode (`make up ARGS="--pooler"`): the journeys pass
through it, concurrent orders never oversell, and migrations went direct."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg2
import pytest

# The journeys of test_journeys.py, collected again here: they run against this module's `mesh`.
from test_journeys import (  # noqa: F401
    test_order_journey_reserves_stock_lists_names_and_is_idempotent,
    test_tokens_flow_signup_login_call_refresh_reuse_logout,
)

from conftest import bearer, signup_and_login, start_fleet, stop_fleet
from mesh.fleet import Fleet
from mesh.pooler import pgbouncer_binary
from mesh.testing import tool_missing


@pytest.fixture(scope="module")
def mesh(mesh_registry, admin_url: str, tmp_path_factory) -> Iterator[Fleet]:
    """The whole mesh in sidecar mode, every service's database traffic through PgBouncer."""
    if pgbouncer_binary() is None:
        tool_missing("pgbouncer is not installed (Debian package pgbouncer)")
    fleet = start_fleet(mesh_registry, admin_url, tmp_path_factory.mktemp("pooled"), pooler=True)
    try:
        yield fleet
    finally:
        stop_fleet(fleet)


def test_every_role_is_served_by_a_transaction_pool(mesh: Fleet) -> None:
    signup_and_login(mesh)
    assert mesh.pgbouncer is not None
    rows = mesh.pgbouncer.show("POOLS")
    pools = {row["user"]: row["pool_mode"] for row in rows if row["database"] == mesh.database}
    # auth_query's own pool: it looks the roles' SCRAM secrets up as the superuser.
    pools.pop(psycopg2.extensions.parse_dsn(mesh.admin_url)["user"], None)
    # orders_reader: the read-only alias for catalog's names goes through the pooler too.
    assert pools == {role: "transaction" for role in ("identity", "catalog", "orders", "orders_reader")}
    stats = {row["database"]: row for row in mesh.pgbouncer.show("STATS")}
    assert stats[mesh.database]["total_xact_count"] > 0


def test_the_services_connect_to_pgbouncer_not_to_postgres(mesh: Fleet) -> None:
    for service in mesh.services:
        env = mesh.env(service)
        assert env["DATABASE_POOLER"] == "transaction"
        assert f":{mesh.pgbouncer.port}/" in env["DATABASE_URL"]
        # Migrations bypass it: migrate_locked's advisory lock needs a session.
        direct = mesh.env(service, direct=True)
        assert "DATABASE_POOLER" not in direct
        assert f":{mesh.pgbouncer.port}/" not in direct["DATABASE_URL"]
    conn = psycopg2.connect(mesh.database_url("orders", direct=True))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop'")
            assert cursor.fetchone()[0] >= 1
    finally:
        conn.close()


def test_concurrent_orders_never_oversell_through_the_pooler(mesh: Fleet) -> None:
    stock = 6
    catalog = httpx.get(f"{mesh.url('catalog')}/api/v1/products").json()["items"]
    sku = catalog[0]["sku"]
    conn = psycopg2.connect(mesh.database_url("catalog", direct=True))
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute("UPDATE products_product SET stock = %s WHERE sku = %s", [stock, sku])
    finally:
        conn.close()
    users = [signup_and_login(mesh) for _ in range(4)]

    def place(index: int) -> httpx.Response:
        user = users[index % len(users)]
        headers = {**bearer(user["access_token"]), "Idempotency-Key": uuid.uuid4().hex}
        body = {"items": [{"sku": sku, "qty": 1}]}
        return httpx.post(f"{mesh.url('orders')}/api/v1/orders", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(place, range(20)))

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, {r.status_code: r.text for r in responses}
    assert statuses[201] == stock, statuses
    left = httpx.get(f"{mesh.url('catalog')}/api/v1/products/{sku}").json()["stock"]
    assert left == 0


def test_a_rerun_bootstrap_does_not_lock_the_services_out(mesh: Fleet) -> None:
    # Every bootstrap (each test session, each `make up`) sets the roles' passwords again, which
    # re-salts their SCRAM secrets; PgBouncer must log in with the current ones.
    mesh.bootstrap()
    mesh.pgbouncer.console("RECONNECT")  # new server connections from here on
    for service in mesh.services:
        ready = httpx.get(f"{mesh.url(service.name)}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
    signup_and_login(mesh)
