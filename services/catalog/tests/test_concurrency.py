"""Many reservations at once through a real gunicorn with several workers: never oversold, whether
catalog talks to PostgreSQL directly or through PgBouncer in transaction mode."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

import mesh.testing
from catalog.products.models import Product, Reservation, ReservationLine
from mesh.pooler import PgBouncer, pgbouncer_binary
from mesh.postgres import free_port
from mesh.processes import ManagedProcess, python_module, wait_for_http
from mesh.testing import tool_missing

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 24


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def served_catalog(
    request: pytest.FixtureRequest, signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """catalog under gunicorn (4 workers) on a free loopback port, on this session's database:
    directly, or through PgBouncer in transaction mode with a pool smaller than the workers' demand."""
    tmp_path = tmp_path_factory.mktemp("catalog")
    port = free_port()
    database: dict[str, str] = {}
    pooler = None
    if request.param == "pgbouncer":
        if pgbouncer_binary() is None:
            tool_missing("pgbouncer is not installed (Debian package pgbouncer)")
        # Two server connections for four workers: transactions queue in the pooler.
        pooler = PgBouncer(mesh.testing.test_admin_url(), tmp_path / "pgbouncer", pool_size=2)
        pooler.start()
        database = {
            "DATABASE_URL": pooler.url(os.environ["DATABASE_URL"]),
            "DATABASE_POOLER": "transaction",
        }
    env = {
        **os.environ,
        **signer.env(),
        "DJANGO_SETTINGS_MODULE": "catalog.settings",
        "MESH_LOCAL_DEV": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "4",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **database,
    }
    app = ManagedProcess(
        name="catalog",
        argv=python_module("gunicorn", "--config", "python:meshkit.gunicorn", "catalog.wsgi"),
        env=env,
        log_path=tmp_path / "catalog.log",
    )
    app.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", timeout=60, watch=[app])
        yield base
    finally:
        app.stop()
        if pooler is not None:
            pooler.stop()


def reserve_all(base: str, token: str, bodies: list[dict]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}

    def send(body: dict) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            return client.post(f"{base}/api/v1/reservations", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(send, bodies))


def service_token(signer) -> str:
    return signer.token("service:orders", use="service", client_id="orders")


def test_parallel_reservations_never_oversell(served_catalog: str, signer) -> None:
    Product.objects.create(sku="HOT-1", name="Hot item", price=Decimal("5.00"), stock=10)
    bodies = [
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "HOT-1", "qty": 1 + i % 2}]}
        for i in range(60)
    ]
    responses = reserve_all(served_catalog, service_token(signer), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    reserved = sum(
        body["items"][0]["qty"] for body, r in zip(bodies, responses, strict=True) if r.status_code == 201
    )
    stock = Product.objects.get(sku="HOT-1").stock
    assert stock >= 0
    assert reserved + stock == 10
    # Single units are always asked for, so the stock runs out exactly.
    assert stock == 0
    held = sum(ReservationLine.objects.filter(sku="HOT-1").values_list("qty", flat=True))
    assert held == reserved
    assert Reservation.objects.count() == statuses[201]
    # Counted across all four workers (prometheus-client's multiprocess mode); this test runs first.
    metrics = httpx.get(f"{served_catalog}/metrics").text
    assert f'catalog_reservations_total{{outcome="reserved"}} {float(statuses[201])}' in metrics
    assert f'catalog_reservations_total{{outcome="insufficient_stock"}} {float(statuses[409])}' in metrics


def test_crossed_multi_product_reservations_neither_deadlock_nor_oversell(
    served_catalog: str, signer
) -> None:
    Product.objects.create(sku="A-1", name="A", price=Decimal("1.00"), stock=15)
    Product.objects.create(sku="B-1", name="B", price=Decimal("2.00"), stock=15)
    bodies = []
    for i in range(48):
        items = [{"sku": "A-1", "qty": 1}, {"sku": "B-1", "qty": 1}]
        bodies.append({"reservation_id": str(uuid.uuid4()), "items": items if i % 2 else items[::-1]})
    responses = reserve_all(served_catalog, service_token(signer), bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 15, 409: 33}, statuses
    assert dict(Product.objects.values_list("sku", "stock")) == {"A-1": 0, "B-1": 0}


def test_parallel_retries_of_one_reservation_reserve_once(served_catalog: str, signer) -> None:
    Product.objects.create(sku="ONE-1", name="One", price=Decimal("9.99"), stock=50)
    body = {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "ONE-1", "qty": 3}]}
    responses = reserve_all(served_catalog, service_token(signer), [body] * THREADS)

    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1  # every retry saw the same result
    assert Product.objects.get(sku="ONE-1").stock == 47
    assert Reservation.objects.count() == 1
