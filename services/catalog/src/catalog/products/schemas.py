"""The JSON shapes of catalog's API; the OpenAPI document is generated from these.

Prices travel as decimal strings (``"19.99"``): a JSON number would be parsed as a binary float on
the way in and could no longer be trusted to the cent.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from ninja import Schema
from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)

from catalog.products.models import CURRENCY_PATTERN, PRICE_DECIMAL_PLACES, PRICE_MAX_DIGITS, SKU_PATTERN
from meshkit.api import PartialUpdate

MAX_QTY = 1000
MAX_ITEMS = 100
_PRICE_RE = re.compile(
    rf"^\d{{1,{PRICE_MAX_DIGITS - PRICE_DECIMAL_PLACES}}}(\.\d{{1,{PRICE_DECIMAL_PLACES}}})?$"
)
PRICE_JSON_PATTERN = _PRICE_RE.pattern


def _price_from_string(value: Any) -> Decimal:
    # Only strings: a float has already lost the exact value by the time we would see it.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str) or not _PRICE_RE.match(value):
        raise ValueError('price must be a decimal string such as "19.99" (at most 2 decimal places)')
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError("price is not a decimal number") from None


PriceIn = Annotated[
    Decimal,
    BeforeValidator(_price_from_string),
    WithJsonSchema({"type": "string", "pattern": PRICE_JSON_PATTERN, "examples": ["19.99"]}),
]
PriceOut = Annotated[
    Decimal,
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str),
    WithJsonSchema({"type": "string", "examples": ["19.99"]}),
]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, examples=["MUG-001"])]
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN, examples=["EUR"])]
Qty = Annotated[int, Field(ge=1, le=MAX_QTY, strict=True)]
# A JSON true/false only: "yes", 1 or "false" must not quietly become a bool.
StrictBool = Annotated[bool, Field(strict=True)]


class Detail(Schema):
    detail: str


class Invalid(Schema):
    detail: str
    errors: dict[str, list[str]]


class SkuProblem(Schema):
    detail: str
    skus: list[str]


class CategoryOut(Schema):
    slug: str
    name: str


class CategoryIn(Schema):
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", examples=["kitchen"])]
    name: Annotated[str, Field(min_length=1, max_length=120)]


class ProductOut(Schema):
    sku: str
    name: str
    description: str
    category: str | None = Field(None, description="The category's slug.")
    price: PriceOut
    currency: str
    stock: int
    active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    @staticmethod
    def resolve_category(obj: Any) -> str | None:
        return obj.category.slug if obj.category_id else None


class ProductIn(Schema):
    sku: Sku
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5000)] = ""
    category: Annotated[str, Field(max_length=64)] | None = None
    price: PriceIn
    currency: Currency = "EUR"
    stock: Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)] = 0
    active: StrictBool = True


class ProductPatch(PartialUpdate):
    """Only the fields sent change; ``category: null`` removes the category."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    category: Annotated[str, Field(max_length=64)] | None = None
    price: PriceIn | None = None
    currency: Currency | None = None
    stock: Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)] | None = None
    active: StrictBool | None = None


class ProductPage(Schema):
    items: list[ProductOut]
    count: int
    page: int
    page_size: int


class ItemIn(Schema):
    sku: Sku
    qty: Qty


class ReservationIn(Schema):
    reservation_id: uuid.UUID
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
    qty: int
    unit_price: PriceOut
    currency: str


class ReservationOut(Schema):
    reservation_id: uuid.UUID
    status: str
    items: list[LineOut]
    total: PriceOut
    created_at: datetime.datetime
    expires_at: datetime.datetime | None = None
