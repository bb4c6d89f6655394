"""catalog's JSON API through Django's test client, against the real schema and real tokens."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from catalog.products.models import Category, Product, Reservation

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/v1/products"
RESERVATIONS = "/api/v1/reservations"


@pytest.fixture
def catalog() -> dict[str, Product]:
    kitchen = Category.objects.create(slug="kitchen", name="Kitchen")
    office = Category.objects.create(slug="office", name="Office")
    return {
        "MUG-1": Product.objects.create(
            sku="MUG-1", name="Enamel mug", category=kitchen, price=Decimal("12.50"), stock=5
        ),
        "KTL-1": Product.objects.create(
            sku="KTL-1",
            name="Kettle",
            description="Whistles",
            category=kitchen,
            price=Decimal("39.90"),
            stock=2,
        ),
        "PEN-1": Product.objects.create(
            sku="PEN-1", name="Pen", category=office, price=Decimal("3.10"), stock=9
        ),
        "OLD-1": Product.objects.create(
            sku="OLD-1", name="Old mug", price=Decimal("1.00"), stock=9, active=False
        ),
    }


def post(client: Client, path: str, body: object, **headers: str):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **headers)


def patch(client: Client, path: str, body: object, **headers: str):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.patch(path, data=data, content_type="application/json", **headers)


def stocks() -> dict[str, int]:
    return dict(Product.objects.values_list("sku", "stock"))


def counter(outcome: str) -> float:
    return REGISTRY.get_sample_value("catalog_reservations_total", {"outcome": outcome}) or 0.0


# -- public reads --------------------------------------------------------------------------------


def test_list_is_public_paginated_and_shows_prices_as_strings(client: Client, catalog) -> None:
    body = client.get(PRODUCTS, {"page_size": 2}).json()
    assert body["count"] == 3  # the inactive product is not listed
    assert [p["sku"] for p in body["items"]] == ["KTL-1", "MUG-1"]
    kettle = body["items"][0]
    assert kettle["price"] == "39.90"
    assert kettle["stock"] == 2
    assert kettle["category"] == "kitchen"
    second = client.get(PRODUCTS, {"page_size": 2, "page": 2}).json()
    assert [p["sku"] for p in second["items"]] == ["PEN-1"]


@pytest.mark.parametrize(
    ("params", "skus"),
    [
        ({"category": "office"}, ["PEN-1"]),
        ({"search": "whistle"}, ["KTL-1"]),
        ({"search": "mug"}, ["MUG-1"]),
        ({"category": "kitchen", "search": "KTL"}, ["KTL-1"]),
        ({"category": "garden"}, []),
    ],
)
def test_list_filters(client: Client, catalog, params: dict[str, str], skus: list[str]) -> None:
    assert [p["sku"] for p in client.get(PRODUCTS, params).json()["items"]] == skus


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "x"}, {"page": str(10**30)}, {"page_size": "1000"}, {"search": "a\x00b"}],
)
def test_bad_list_parameters_are_400(client: Client, catalog, params: dict[str, str]) -> None:
    response = client.get(PRODUCTS, params)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]


def test_one_product_by_sku(client: Client, catalog) -> None:
    body = client.get(f"{PRODUCTS}/MUG-1").json()
    assert body["name"] == "Enamel mug"
    assert body["stock"] == 5
    assert body["price"] == "12.50"


@pytest.mark.parametrize("sku", ["NOPE", "a%00b", "%20", "x" * 300])
def test_unknown_or_impossible_sku_is_404(client: Client, catalog, sku: str) -> None:
    response = client.get(f"{PRODUCTS}/{sku}")
    assert response.status_code == 404
    assert response.json()["detail"]


# -- staff writes --------------------------------------------------------------------------------

NEW = {"sku": "LMP-1", "name": "Desk lamp", "price": "49.50", "stock": 3, "category": "office"}


def test_staff_create_a_product(client: Client, catalog, staff) -> None:
    response = post(client, PRODUCTS, NEW, **staff)
    assert response.status_code == 201, response.content
    assert response.json()["price"] == "49.50"
    lamp = Product.objects.get(sku="LMP-1")
    assert lamp.price == Decimal("49.50")
    assert lamp.category.slug == "office"
    assert lamp.currency == "EUR"


def test_writes_need_a_token_with_catalog_write(client: Client, catalog, customer, orders_service) -> None:
    assert post(client, PRODUCTS, NEW).status_code == 401
    assert post(client, PRODUCTS, NEW, **customer).status_code == 403
    assert post(client, PRODUCTS, NEW, **orders_service).status_code == 403
    assert patch(client, f"{PRODUCTS}/MUG-1", {"stock": 99}, **customer).status_code == 403
    assert not Product.objects.filter(sku="LMP-1").exists()
    assert stocks()["MUG-1"] == 5


def test_duplicate_sku_is_409(client: Client, catalog, staff) -> None:
    response = post(client, PRODUCTS, {**NEW, "sku": "MUG-1"}, **staff)
    assert response.status_code == 409
    assert Product.objects.get(sku="MUG-1").name == "Enamel mug"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": 49.5}, "price"),  # a JSON number: floats are refused, prices are strings
        ({"price": "49.505"}, "price"),
        ({"price": "-1.00"}, "price"),
        ({"price": "1e3"}, "price"),
        ({"price": "123456789.00"}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": "3"}, "stock"),
        ({"stock": 10**12}, "stock"),
        ({"sku": "bad sku"}, "sku"),
        ({"sku": ""}, "sku"),
        ({"name": ""}, "name"),
        ({"name": "nul\x00byte"}, "name"),
        ({"currency": "euro"}, "currency"),
    ],
)
def test_bad_product_is_400_and_stores_nothing(
    client: Client, catalog, staff, change: dict, field: str
) -> None:
    response = post(client, PRODUCTS, {**NEW, **change}, **staff)
    assert response.status_code == 400, response.content
    assert field in " ".join(response.json()["errors"])
    assert Product.objects.count() == 4


def test_unknown_category_is_400(client: Client, catalog, staff) -> None:
    response = post(client, PRODUCTS, {**NEW, "category": "garden"}, **staff)
    assert response.status_code == 400
    assert "garden" in response.json()["detail"]
    assert Product.objects.count() == 4


def test_staff_patch_changes_only_what_is_sent(client: Client, catalog, staff) -> None:
    response = patch(client, f"{PRODUCTS}/MUG-1", {"price": "13.00", "stock": 40}, **staff)
    assert response.status_code == 200, response.content
    mug = Product.objects.get(sku="MUG-1")
    assert (mug.price, mug.stock, mug.name) == (Decimal("13.00"), 40, "Enamel mug")


@pytest.mark.parametrize("body", [{"name": None}, {"stock": -5}, {"price": 1.5}, "[]", "{oops"])
def test_bad_patch_is_400_and_changes_nothing(client: Client, catalog, staff, body) -> None:
    response = patch(client, f"{PRODUCTS}/MUG-1", body, **staff)
    assert response.status_code == 400, response.content
    mug = Product.objects.get(sku="MUG-1")
    assert (mug.name, mug.stock, mug.price) == ("Enamel mug", 5, Decimal("12.50"))


def test_patch_of_unknown_product_is_404(client: Client, catalog, staff) -> None:
    assert patch(client, f"{PRODUCTS}/NOPE", {"stock": 1}, **staff).status_code == 404


# -- reservations --------------------------------------------------------------------------------


def reserve(client: Client, headers: dict[str, str], items: list, rid: str | None = None):
    return post(client, RESERVATIONS, {"reservation_id": rid or str(uuid.uuid4()), "items": items}, **headers)


def test_reservation_takes_stock_and_returns_prices(client: Client, catalog, orders_service) -> None:
    before = counter("reserved")
    rid = str(uuid.uuid4())
    response = reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}, {"sku": "PEN-1", "qty": 1}], rid)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["reservation_id"] == rid
    assert body["status"] == "reserved"
    assert body["total"] == "28.10"
    assert {(i["sku"], i["qty"], i["unit_price"], i["currency"]) for i in body["items"]} == {
        ("MUG-1", 2, "12.50", "EUR"),
        ("PEN-1", 1, "3.10", "EUR"),
    }
    assert stocks()["MUG-1"] == 3
    assert stocks()["PEN-1"] == 8
    assert Reservation.objects.get(reservation_id=rid).client_id == "orders"
    assert counter("reserved") == before + 1


def test_a_retried_reservation_returns_the_same_result_and_reserves_once(
    client: Client, catalog, orders_service
) -> None:
    rid = str(uuid.uuid4())
    items = [{"sku": "MUG-1", "qty": 2}]
    first = reserve(client, orders_service, items, rid)
    again = reserve(client, orders_service, items, rid)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert stocks()["MUG-1"] == 3


def test_same_reservation_id_with_other_items_is_422(client: Client, catalog, orders_service) -> None:
    rid = str(uuid.uuid4())
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], rid)
    response = reserve(client, orders_service, [{"sku": "MUG-1", "qty": 3}], rid)
    assert response.status_code == 422
    assert stocks()["MUG-1"] == 3


def test_short_stock_is_409_with_the_skus_and_reserves_nothing(
    client: Client, catalog, orders_service
) -> None:
    before = counter("insufficient_stock")
    response = reserve(client, orders_service, [{"sku": "MUG-1", "qty": 1}, {"sku": "KTL-1", "qty": 3}])
    assert response.status_code == 409
    assert response.json()["skus"] == ["KTL-1"]
    assert stocks() == {"MUG-1": 5, "KTL-1": 2, "PEN-1": 9, "OLD-1": 9}
    assert not Reservation.objects.exists()
    assert counter("insufficient_stock") == before + 1


def test_unknown_or_inactive_sku_is_400_with_the_skus(client: Client, catalog, orders_service) -> None:
    response = reserve(
        client,
        orders_service,
        [{"sku": "MUG-1", "qty": 1}, {"sku": "NOPE", "qty": 1}, {"sku": "OLD-1", "qty": 1}],
    )
    assert response.status_code == 400
    assert response.json()["skus"] == ["NOPE", "OLD-1"]
    assert stocks()["MUG-1"] == 5
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"reservation_id": "not-a-uuid", "items": [{"sku": "MUG-1", "qty": 1}]},
        {"items": [{"sku": "MUG-1", "qty": 1}]},
        {"reservation_id": str(uuid.uuid4()), "items": []},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": 0}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": -1}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": 1001}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": 10**40}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": "1"}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": 1.5}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1", "qty": True}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "MUG-1"}]},
        {"reservation_id": str(uuid.uuid4()), "items": [{"sku": "a\x00", "qty": 1}]},
        {
            "reservation_id": str(uuid.uuid4()),
            "items": [{"sku": "MUG-1", "qty": 1}, {"sku": "MUG-1", "qty": 2}],
        },
        {"reservation_id": str(uuid.uuid4()), "items": "MUG-1"},
        "{not json",
        "[]",
        "null",
        "",
    ],
)
def test_bad_reservation_is_400_and_moves_no_stock(client: Client, catalog, orders_service, body) -> None:
    response = post(client, RESERVATIONS, body, **orders_service)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]
    assert stocks()["MUG-1"] == 5
    assert not Reservation.objects.exists()


def test_reservations_need_a_service_token_for_catalog(client: Client, catalog, signer, staff) -> None:
    items = [{"sku": "MUG-1", "qty": 1}]
    assert reserve(client, {}, items).status_code == 401
    assert reserve(client, staff, items).status_code == 403  # a user, even staff, is not a service
    elsewhere = signer.token("service:orders", use="service", aud="identity", client_id="orders")
    assert reserve(client, {"HTTP_AUTHORIZATION": f"Bearer {elsewhere}"}, items).status_code == 401
    assert stocks()["MUG-1"] == 5


def test_release_and_commit(client: Client, catalog, orders_service) -> None:
    sold, returned = str(uuid.uuid4()), str(uuid.uuid4())
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], sold)
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 3}], returned)
    assert stocks()["MUG-1"] == 0

    committed = post(client, f"{RESERVATIONS}/{sold}/commit", "", **orders_service)
    assert committed.status_code == 200
    assert committed.json()["status"] == "committed"
    released = post(client, f"{RESERVATIONS}/{returned}/release", "", **orders_service)
    assert released.status_code == 200
    assert released.json()["status"] == "released"
    assert stocks()["MUG-1"] == 3
    # Both are idempotent; crossing them is a conflict that moves nothing.
    assert post(client, f"{RESERVATIONS}/{returned}/release", "", **orders_service).status_code == 200
    assert post(client, f"{RESERVATIONS}/{sold}/commit", "", **orders_service).status_code == 200
    assert post(client, f"{RESERVATIONS}/{sold}/release", "", **orders_service).status_code == 409
    assert post(client, f"{RESERVATIONS}/{returned}/commit", "", **orders_service).status_code == 409
    assert stocks()["MUG-1"] == 3


def test_release_of_an_unknown_id_blocks_a_late_reservation(client: Client, catalog, orders_service) -> None:
    rid = str(uuid.uuid4())
    assert post(client, f"{RESERVATIONS}/{rid}/release", "", **orders_service).status_code == 200
    assert reserve(client, orders_service, [{"sku": "MUG-1", "qty": 1}], rid).status_code == 409
    assert stocks()["MUG-1"] == 5


def test_commit_of_unknown_or_malformed_id_is_404(client: Client, catalog, orders_service) -> None:
    assert post(client, f"{RESERVATIONS}/{uuid.uuid4()}/commit", "", **orders_service).status_code == 404
    assert post(client, f"{RESERVATIONS}/not-a-uuid/commit", "", **orders_service).status_code == 404


def test_transitions_need_the_service_token(client: Client, catalog, orders_service, staff) -> None:
    rid = str(uuid.uuid4())
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], rid)
    assert post(client, f"{RESERVATIONS}/{rid}/release", "").status_code == 401
    assert post(client, f"{RESERVATIONS}/{rid}/release", "", **staff).status_code == 403
    assert stocks()["MUG-1"] == 3


# -- documents and metrics -----------------------------------------------------------------------


def test_openapi_document_matches_the_api(client: Client) -> None:
    document = client.get("/api/v1/openapi.json").json()
    paths = document["paths"]
    assert {"/api/v1/products", "/api/v1/products/{sku}", "/api/v1/reservations"} <= set(paths)
    assert "/api/v1/reservations/{reservation_id}/release" in paths
    schemas = document["components"]["schemas"]
    assert schemas["ProductOut"]["properties"]["price"]["type"] == "string"
    assert schemas["ProductIn"]["properties"]["price"]["type"] == "string"
    qty = schemas["ItemIn"]["properties"]["qty"]
    assert (qty["minimum"], qty["maximum"]) == (1, 1000)
    assert client.get("/api/v1/docs").status_code == 200


def test_metrics_expose_reservation_outcomes(client: Client) -> None:
    text = client.get("/metrics").content.decode()
    assert 'catalog_reservations_total{outcome="insufficient_stock"}' in text


# -- leases: stock held by a caller that died comes back by itself ----------------------------------


def test_an_expired_lease_puts_the_stock_back_on_the_next_read(
    client: Client, catalog, orders_service, settings
) -> None:
    settings.CATALOG_RESERVATION_TTL = 0.5
    rid = str(uuid.uuid4())
    held = reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], rid)
    assert held.status_code == 201
    assert held.json()["expires_at"] is not None
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 3
    time.sleep(0.7)
    before = counter("expired")
    # Nobody committed or released it: the next read finds the stock back, once.
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 5
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 5
    assert counter("expired") == before + 1
    assert Reservation.objects.get(reservation_id=rid).status == "released"
    # The caller that comes back late cannot sell what it no longer holds.
    late = post(client, f"{RESERVATIONS}/{rid}/commit", "", **orders_service)
    assert late.status_code == 409
    assert "released" in late.json()["detail"]


def test_a_commit_after_expiry_but_before_reclaim_still_sells(
    client: Client, catalog, orders_service, settings
) -> None:
    settings.CATALOG_RESERVATION_TTL = 0.5
    rid = str(uuid.uuid4())
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], rid)
    time.sleep(0.7)
    assert post(client, f"{RESERVATIONS}/{rid}/commit", "", **orders_service).status_code == 200
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 3
    assert stocks()["MUG-1"] == 3


def test_an_expired_lease_is_reclaimed_before_a_reservation_is_refused(
    client: Client, catalog, orders_service, settings
) -> None:
    settings.CATALOG_RESERVATION_TTL = 0.5
    assert reserve(client, orders_service, [{"sku": "MUG-1", "qty": 5}]).status_code == 201
    assert reserve(client, orders_service, [{"sku": "MUG-1", "qty": 5}]).status_code == 409
    time.sleep(0.7)
    assert reserve(client, orders_service, [{"sku": "MUG-1", "qty": 5}]).status_code == 201


def test_a_reservation_from_before_leases_expires_a_ttl_after_creation(
    client: Client, catalog, orders_service, settings
) -> None:
    # A pod of the previous release (no expires_at) wrote it during a rolling deploy.
    rid = str(uuid.uuid4())
    reserve(client, orders_service, [{"sku": "MUG-1", "qty": 2}], rid)
    Reservation.objects.filter(reservation_id=rid).update(expires_at=None)
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 3
    settings.CATALOG_RESERVATION_TTL = 0.5
    time.sleep(0.7)
    assert client.get(f"{PRODUCTS}/MUG-1").json()["stock"] == 5
