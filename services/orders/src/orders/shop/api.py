"""Customers' orders: place one (idempotently), list yours, read one of yours."""

from __future__ import annotations

import datetime
import uuid
from collections import Counter
from decimal import Decimal
from typing import Annotated, Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Field, Header, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import PlainSerializer, WithJsonSchema, field_validator

from orders.catalogread.models import names_by_sku
from orders.shop.auth import customer, subject_of
from orders.shop.catalog_client import catalog_client
from orders.shop.models import Order
from orders.shop.placing import Item, place_order

router = Router(tags=["orders"])

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Printable ASCII without spaces: keys are logged and compared byte for byte.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
MAX_QTY = 1000
MAX_ITEMS = 100

Money = Annotated[
    Decimal,
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str),
    WithJsonSchema({"type": "string", "examples": ["19.99"]}),
]


class Detail(Schema):
    detail: str


class Invalid(Schema):
    detail: str
    errors: dict[str, list[str]]


class SkuProblem(Schema):
    detail: str
    skus: list[str]


class ItemIn(Schema):
    sku: Annotated[str, Field(pattern=SKU_PATTERN, examples=["MUG-001"])]
    qty: Annotated[int, Field(ge=1, le=MAX_QTY, strict=True)]


class OrderIn(Schema):
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]

    @field_validator("items")
    @classmethod
    def _distinct_skus(cls, items: list[ItemIn]) -> list[ItemIn]:
        counts = Counter(item.sku for item in items)
        duplicates = sorted(sku for sku, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"each sku may appear once; repeated: {', '.join(duplicates)}")
        return items


class LineOut(Schema):
    sku: str
    name: str | None = Field(None, description="The product's current name in the catalog.")
    qty: int
    unit_price: Money
    line_total: Money


class OrderOut(Schema):
    id: uuid.UUID
    status: str
    total: Money
    currency: str
    items: list[LineOut]
    created_at: datetime.datetime


class OrderPage(Schema):
    items: list[OrderOut]
    count: int
    page: int
    page_size: int


class PageParams(Schema):
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    page_size: Annotated[int, Field(ge=1, le=100)] = 20


def _render(orders: list[Order]) -> list[dict[str, Any]]:
    """Orders as the API shows them, with product names read from catalog's table in one query."""
    names = names_by_sku({line.sku for order in orders for line in order.lines.all()})
    return [
        {
            "id": order.id,
            "status": order.status,
            "total": order.total,
            "currency": order.currency,
            "created_at": order.created_at,
            "items": [
                {
                    "sku": line.sku,
                    "name": names.get(line.sku),
                    "qty": line.qty,
                    "unit_price": line.unit_price,
                    "line_total": line.line_total,
                }
                for line in order.lines.all()
            ],
        }
        for order in orders
    ]


def _visible(request: HttpRequest) -> QuerySet[Order]:
    # Only confirmed orders exist for the customer; claims and half-done attempts are internal.
    return Order.objects.filter(user_id=subject_of(request), status=Order.Status.CONFIRMED).prefetch_related(
        "lines"
    )


@router.post(
    "orders",
    response={
        201: OrderOut,
        400: Invalid | SkuProblem | Detail,
        401: Detail,
        403: Detail,
        409: SkuProblem | Detail,
        422: Detail,
        502: Detail,
        503: Detail,
    },
    auth=customer,
    summary="Place an order (Idempotency-Key required)",
)
def create_order(
    request: HttpRequest,
    response: HttpResponse,
    payload: OrderIn,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="A key of your choice (e.g. a UUID): retrying with it returns the same order.",
        ),
    ],
) -> Any:
    """Reserve the items at catalog, store the order with catalog's prices, and commit.

    Repeating a request with the same ``Idempotency-Key`` returns the same order (header
    ``Idempotent-Replayed: true``); the same key with another body is 422. 409 with ``skus`` names
    products short of stock. 502/503 mean catalog failed: no order was stored and no stock is held.
    """
    items = [Item(item.sku, item.qty) for item in payload.items]
    # OrderFailed propagates to the handler in orders.api, which renders its status and body.
    placed = place_order(subject_of(request), idempotency_key, items, catalog_client())
    if placed.replayed:
        response["Idempotent-Replayed"] = "true"
    return Status(201, _render([Order.objects.prefetch_related("lines").get(pk=placed.order.pk)])[0])


@router.get("orders", response={200: OrderPage, 400: Invalid, 401: Detail, 403: Detail}, auth=customer)
def list_orders(request: HttpRequest, params: Query[PageParams]) -> dict[str, Any]:
    """Your own orders, newest first."""
    queryset = _visible(request)
    offset = (params.page - 1) * params.page_size
    return {
        "items": _render(list(queryset[offset : offset + params.page_size])),
        "count": queryset.count(),
        "page": params.page,
        "page_size": params.page_size,
    }


@router.get(
    "orders/{order_id}", response={200: OrderOut, 401: Detail, 403: Detail, 404: Detail}, auth=customer
)
def get_order(request: HttpRequest, order_id: str) -> dict[str, Any]:
    """One of your orders; someone else's is 404, as if it did not exist."""
    try:
        key = uuid.UUID(order_id)
    except ValueError:
        raise HttpError(404, "No such order.") from None
    order = _visible(request).filter(pk=key).first()
    if order is None:
        raise HttpError(404, "No such order.")
    return _render([order])[0]
