"""orders end to end at the service level: real identity and catalog under gunicorn, orders in-process.

identity issues the user tokens and orders' service token; catalog takes the reservations. A small
fault-injecting HTTP relay sits between orders and catalog, so a test can block catalog in the
middle of an order (after the reservation, before the commit) and check that no stock is lost.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db.models import F
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from conftest import add_product, session_database, stock_of
from mesh.fleet import Fleet
from mesh.registry import Registry
from meshauth.django import conf as meshauth_conf
from orders.shop import catalog_client
from orders.shop.models import Order
from orders.shop.placing import Item, request_hash, stale_after

pytestmark = pytest.mark.django_db(databases=["default", "catalog"])

ORDERS = "/api/v1/orders"
CLIENT_SECRET = "orders-test-client-secret"
PASSWORD = "correct horse battery staple"


class Relay:
    """Forwards HTTP to catalog, except what a test tells it to break.

    ``faults`` maps a path suffix to ``"503"`` (answer 503 without forwarding: catalog blocked) or
    ``"lose_answer"`` (forward, then cut the connection: catalog acted but its answer is lost).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.faults: dict[str, str] = {}
        self.seen: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                relay.seen.append(self.path)
                fault = next((f for s, f in relay.faults.items() if self.path.endswith(s)), None)
                if fault == "503":
                    self._answer(503, b'{"detail": "blocked by the test"}')
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")
                }
                upstream = httpx.post(relay.target + self.path, content=body, headers=headers, timeout=30)
                if fault == "lose_answer":
                    self.close_connection = True
                    self.connection.close()
                    return
                self._answer(upstream.status_code, upstream.content)

            def _answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream(
    mesh_registry: Registry, admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """identity and catalog as real gunicorn processes on free ports, on this session's database."""
    clients = {"orders": {"audiences": ["catalog", "identity"], "secret": CLIENT_SECRET}}
    fleet = Fleet(
        registry=mesh_registry,
        admin_url=admin_url,
        database=session_database(),
        run_dir=Path(tmp_path_factory.mktemp("fleet")),
        mode="inprocess",
        workers=2,
        fixed_ports=False,
        only=("identity", "catalog"),
        service_env={"identity": {"MESH_SERVICE_CLIENTS": json.dumps(clients)}},
    )
    try:
        fleet.up()
        fleet.seed(mesh_registry["identity"], lambda _: None)
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def relay(upstream: Fleet) -> Iterator[Relay]:
    relay = Relay(upstream.url("catalog"))
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture(autouse=True)
def orders_env(upstream: Fleet, relay: Relay, settings) -> Iterator[None]:
    """orders configured as the fleet would: identity's JWKS, its own client, catalog behind the relay."""
    identity = upstream.url("identity")
    env = {
        "MESHAUTH_MODE": "inprocess",
        "MESHAUTH_ISSUER": identity,
        "MESHAUTH_AUDIENCE": "orders,mesh",
        "MESHAUTH_JWKS_URL": f"{identity}/.well-known/jwks.json",
        "MESHAUTH_IDENTITY_URL": identity,
        "MESHAUTH_CLIENT_ID": "orders",
        "MESHAUTH_CLIENT_SECRET": CLIENT_SECRET,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    meshauth_conf.reset()
    catalog_client._service_client.cache_clear()
    settings.ORDERS_CATALOG_URL = relay.url
    relay.faults.clear()
    relay.seen.clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        catalog_client._service_client.cache_clear()
        meshauth_conf.reset()


def user_token(fleet: Fleet) -> str:
    identity = fleet.url("identity")
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = httpx.post(f"{identity}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return tokens.json()["access_token"]


@pytest.fixture
def alice(upstream: Fleet) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {user_token(upstream)}"}


@pytest.fixture
def bob(upstream: Fleet) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {user_token(upstream)}"}


@pytest.fixture
def shelf(catalog_db) -> Any:
    add_product(catalog_db, "MUG-1", "Enamel mug", price="12.50", stock=5, category="kitchen")
    add_product(catalog_db, "PEN-1", "Fountain pen", price="24.00", stock=2)
    return catalog_db


def order(
    client: Client, headers: dict[str, str], items: Any, key: str | None = None, raw: str | None = None
):
    extra = dict(headers)
    if key is not False:
        extra["HTTP_IDEMPOTENCY_KEY"] = key or uuid.uuid4().hex
    data = raw if raw is not None else json.dumps({"items": items})
    return client.post(ORDERS, data=data, content_type="application/json", **extra)


def reservation_statuses(conn) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute("SELECT status FROM products_reservation ORDER BY created_at")
        return [row[0] for row in cursor.fetchall()]


def created_total() -> float:
    return REGISTRY.get_sample_value("orders_created_total") or 0.0


# -- the happy path and idempotency ---------------------------------------------------------------


def test_order_reserves_stores_commits_and_shows_names(client: Client, shelf, alice) -> None:
    before = created_total()
    response = order(client, alice, [{"sku": "MUG-1", "qty": 2}, {"sku": "PEN-1", "qty": 1}])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "confirmed"
    assert body["total"] == "49.00"
    assert body["currency"] == "EUR"
    assert [(i["sku"], i["name"], i["qty"], i["unit_price"], i["line_total"]) for i in body["items"]] == [
        ("MUG-1", "Enamel mug", 2, "12.50", "25.00"),
        ("PEN-1", "Fountain pen", 1, "24.00", "24.00"),
    ]
    assert (stock_of(shelf, "MUG-1"), stock_of(shelf, "PEN-1")) == (3, 1)
    assert reservation_statuses(shelf) == ["committed"]
    assert created_total() == before + 1


def test_same_key_returns_the_same_order_and_moves_stock_once(client: Client, shelf, alice) -> None:
    key = uuid.uuid4().hex
    first = order(client, alice, [{"sku": "MUG-1", "qty": 2}], key)
    again = order(client, alice, [{"sku": "MUG-1", "qty": 2}], key)
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert stock_of(shelf, "MUG-1") == 3
    assert Order.objects.count() == 1


def test_a_dead_attempts_key_gets_409_until_the_retry_after_it_names_then_is_taken_over(
    client: Client, shelf, alice
) -> None:
    """A worker killed mid-order leaves its claim; Retry-After names the wait until a retry may take it."""
    items = [{"sku": "MUG-1", "qty": 2}]
    key = uuid.uuid4().hex
    token = alice["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    subject = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["sub"]
    dead = Order.objects.create(
        user_id=subject,
        idempotency_key=key,
        request_hash=request_hash([Item(sku="MUG-1", qty=2)]),
    )
    age = datetime.timedelta(seconds=10)
    Order.objects.filter(pk=dead.pk).update(updated_at=timezone.now() - age)

    asked = timezone.now()
    waiting = order(client, alice, items, key)
    answered = timezone.now()
    assert waiting.status_code == 409, waiting.content
    retry_after = int(waiting["Retry-After"])
    # What is left of stale_after when the answer was made (the request itself takes a moment).
    left = stale_after() - age
    earliest = math.ceil((left - (answered - asked)).total_seconds())
    assert earliest <= retry_after <= math.ceil(left.total_seconds())
    assert stock_of(shelf, "MUG-1") == 5

    # The client waits what it was told: its retry takes the key over and places the order once.
    waited = datetime.timedelta(seconds=retry_after)
    Order.objects.filter(pk=dead.pk).update(updated_at=F("updated_at") - waited)
    taken = order(client, alice, items, key)
    assert taken.status_code == 201, taken.content
    assert stock_of(shelf, "MUG-1") == 3
    assert Order.objects.get().status == Order.Status.CONFIRMED


def test_same_key_with_another_body_is_422(client: Client, shelf, alice) -> None:
    key = uuid.uuid4().hex
    order(client, alice, [{"sku": "MUG-1", "qty": 2}], key)
    response = order(client, alice, [{"sku": "MUG-1", "qty": 3}], key)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert stock_of(shelf, "MUG-1") == 3
    assert Order.objects.count() == 1


def test_keys_are_per_user(client: Client, shelf, alice, bob) -> None:
    key = uuid.uuid4().hex
    assert order(client, alice, [{"sku": "MUG-1", "qty": 1}], key).status_code == 201
    assert order(client, bob, [{"sku": "MUG-1", "qty": 1}], key).status_code == 201
    assert stock_of(shelf, "MUG-1") == 3


# -- refusals: nothing stored, no stock moved ----------------------------------------------------


def test_short_stock_is_409_and_stores_nothing(client: Client, shelf, alice) -> None:
    response = order(client, alice, [{"sku": "MUG-1", "qty": 1}, {"sku": "PEN-1", "qty": 3}])
    assert response.status_code == 409
    assert response.json()["skus"] == ["PEN-1"]
    assert not Order.objects.exists()
    assert (stock_of(shelf, "MUG-1"), stock_of(shelf, "PEN-1")) == (5, 2)


def test_an_order_too_large_to_store_is_422_and_holds_no_stock(client: Client, shelf, alice) -> None:
    # Each part is valid (catalog's largest price, a quantity within the limit), but the total,
    # 10,099,999,998.99, is more than the orders table's total column holds: no retry could help.
    add_product(shelf, "GOLD-1", "Gold bar", price="99999999.99", stock=500)
    key = uuid.uuid4().hex
    for _ in range(2):
        response = order(client, alice, [{"sku": "GOLD-1", "qty": 101}], key)
        assert response.status_code == 422, response.content
        assert "Retry-After" not in response
        assert "10,099,999,998.99 EUR" in response.json()["detail"]
        assert "9,999,999,999.99" in response.json()["detail"]
    assert not Order.objects.exists()
    assert stock_of(shelf, "GOLD-1") == 500
    assert set(reservation_statuses(shelf)) == {"released"}
    # The largest total that fits is still an order.
    assert order(client, alice, [{"sku": "GOLD-1", "qty": 100}]).status_code == 201


def test_unknown_sku_is_400_and_stores_nothing(client: Client, shelf, alice) -> None:
    response = order(client, alice, [{"sku": "MUG-1", "qty": 1}, {"sku": "NOPE-1", "qty": 1}])
    assert response.status_code == 400
    assert response.json()["skus"] == ["NOPE-1"]
    assert not Order.objects.exists()
    assert stock_of(shelf, "MUG-1") == 5


@pytest.mark.parametrize(
    ("items", "raw", "key"),
    [
        ([{"sku": "MUG-1", "qty": 1}], None, False),  # no Idempotency-Key
        ([{"sku": "MUG-1", "qty": 1}], None, "has spaces"),
        ([{"sku": "MUG-1", "qty": 1}], None, "k" * 201),
        ([{"sku": "MUG-1", "qty": 0}], None, None),
        ([{"sku": "MUG-1", "qty": -2}], None, None),
        ([{"sku": "MUG-1", "qty": 1001}], None, None),
        ([{"sku": "MUG-1", "qty": 10**50}], None, None),
        ([{"sku": "MUG-1", "qty": "2"}], None, None),
        ([{"sku": "MUG-1", "qty": 1.5}], None, None),
        ([{"sku": "MUG-1", "qty": 1}, {"sku": "MUG-1", "qty": 1}], None, None),
        ([{"sku": "MUG\x00", "qty": 1}], None, None),
        ([{"sku": 7, "qty": 1}], None, None),
        ([], None, None),
        ([{"sku": f"S-{i}", "qty": 1} for i in range(101)], None, None),
        (None, "{not json", None),
        (None, "[]", None),
        (None, '{"items": "MUG-1"}', None),
        (None, "", None),
    ],
)
def test_bad_input_is_400_and_changes_nothing(client: Client, shelf, alice, items, raw, key) -> None:
    response = order(client, alice, items, key, raw)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]
    assert not Order.objects.exists()
    assert stock_of(shelf, "MUG-1") == 5
    assert reservation_statuses(shelf) == []


def test_orders_need_a_user_token(client: Client, shelf) -> None:
    assert order(client, {}, [{"sku": "MUG-1", "qty": 1}]).status_code == 401
    assert (
        order(client, {"HTTP_AUTHORIZATION": "Bearer not.a.token"}, [{"sku": "MUG-1", "qty": 1}]).status_code
        == 401
    )
    assert client.get(ORDERS).status_code == 401
    assert stock_of(shelf, "MUG-1") == 5


# -- reading orders ------------------------------------------------------------------------------


def test_users_see_only_their_own_orders(client: Client, shelf, alice, bob) -> None:
    mine = order(client, alice, [{"sku": "MUG-1", "qty": 1}]).json()
    theirs = order(client, bob, [{"sku": "PEN-1", "qty": 1}]).json()
    listing = client.get(ORDERS, **alice).json()
    assert [o["id"] for o in listing["items"]] == [mine["id"]]
    assert listing["items"][0]["items"][0]["name"] == "Enamel mug"
    assert client.get(f"{ORDERS}/{mine['id']}", **alice).status_code == 200
    assert client.get(f"{ORDERS}/{theirs['id']}", **alice).status_code == 404
    assert client.get(f"{ORDERS}/not-an-id", **alice).status_code == 404
    assert client.get(ORDERS, {"page": "0"}, **alice).status_code == 400


def test_openapi_document_matches_the_api(client: Client) -> None:
    document = client.get("/api/v1/openapi.json").json()
    post = document["paths"]["/api/v1/orders"]["post"]
    header = next(p for p in post["parameters"] if p["in"] == "header")
    assert header["name"] == "Idempotency-Key"
    assert header["required"] is True
    assert {"201", "400", "409", "422", "502", "503"} <= set(post["responses"])
    assert "/api/v1/orders/{order_id}" in document["paths"]


# -- catalog failing mid-flow --------------------------------------------------------------------


def test_catalog_blocked_before_the_commit_releases_the_stock(client: Client, shelf, alice, relay) -> None:
    relay.faults["/commit"] = "503"
    response = order(client, alice, [{"sku": "MUG-1", "qty": 2}, {"sku": "PEN-1", "qty": 2}])
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert "no order" in response.json()["detail"]
    assert any(path.endswith("/release") for path in relay.seen)
    assert not Order.objects.exists()
    assert (stock_of(shelf, "MUG-1"), stock_of(shelf, "PEN-1")) == (5, 2)
    assert reservation_statuses(shelf) == ["released"]


def test_catalog_unreachable_for_the_release_is_settled_by_the_retry(
    client: Client, shelf, alice, relay
) -> None:
    """The reservation's answer and the release are both lost; the same key later recovers."""
    key = uuid.uuid4().hex
    relay.faults.update({"/reservations": "lose_answer", "/release": "503"})
    failed = order(client, alice, [{"sku": "MUG-1", "qty": 4}], key)
    assert failed.status_code == 503, failed.content
    assert stock_of(shelf, "MUG-1") == 1  # held at catalog: the release could not get through
    assert not client.get(ORDERS, **alice).json()["items"]
    relay.faults.clear()
    again = order(client, alice, [{"sku": "MUG-1", "qty": 4}], key)
    assert again.status_code == 201, again.content
    assert stock_of(shelf, "MUG-1") == 1  # the first reservation was released, the second committed
    assert reservation_statuses(shelf) == ["released", "committed"]
    assert Order.objects.get().status == Order.Status.CONFIRMED


def test_a_lost_reservation_answer_is_released(client: Client, shelf, alice, relay) -> None:
    relay.faults["/reservations"] = "lose_answer"
    response = order(client, alice, [{"sku": "MUG-1", "qty": 4}])
    assert response.status_code == 503, response.content
    assert not Order.objects.exists()
    assert stock_of(shelf, "MUG-1") == 5
    assert reservation_statuses(shelf) == ["released"]


def test_a_lost_commit_answer_still_confirms_the_order(client: Client, shelf, alice, relay) -> None:
    """catalog committed but orders never heard: the release attempt learns it, and the order stands."""
    relay.faults["/commit"] = "lose_answer"
    response = order(client, alice, [{"sku": "MUG-1", "qty": 1}])
    assert response.status_code == 201, response.content
    assert Order.objects.get().status == Order.Status.CONFIRMED
    assert stock_of(shelf, "MUG-1") == 4
    assert reservation_statuses(shelf) == ["committed"]


def test_catalog_down_is_503_then_the_same_key_succeeds(
    client: Client, shelf, alice, upstream, settings
) -> None:
    settings.ORDERS_CATALOG_URL = upstream.url("catalog")  # no relay: connections are refused
    key = uuid.uuid4().hex
    upstream.stop(["catalog"])
    try:
        down = order(client, alice, [{"sku": "MUG-1", "qty": 1}], key)
        assert down.status_code == 503, down.content
        assert not Order.objects.exists()
        assert stock_of(shelf, "MUG-1") == 5
    finally:
        catalog = upstream.registry["catalog"]
        upstream.start(catalog)
        upstream.wait_ready(catalog)
    again = order(client, alice, [{"sku": "MUG-1", "qty": 1}], key)
    assert again.status_code == 201, again.content
    assert stock_of(shelf, "MUG-1") == 4


def test_release_abandoned_orders_gives_the_stock_back(client: Client, shelf, alice, relay) -> None:
    """A client that never retries: the sweeper command releases what the failed attempt held."""
    relay.faults.update({"/reservations": "lose_answer", "/release": "503"})
    assert order(client, alice, [{"sku": "PEN-1", "qty": 2}]).status_code == 503
    assert stock_of(shelf, "PEN-1") == 0
    relay.faults.clear()
    out = io.StringIO()
    call_command("release_abandoned_orders", stdout=out)
    assert "1 released" in out.getvalue()
    assert stock_of(shelf, "PEN-1") == 2
    assert not Order.objects.exists()
