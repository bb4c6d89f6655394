"""Products (public reads, staff writes) and reservations (orders only, with a service token)."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from catalog.products import reservations
from catalog.products.auth import catalog_writer, client_id_of, reserving_service
from catalog.products.models import SKU_PATTERN, Category, Product, Reservation
from catalog.products.schemas import (
    CategoryIn,
    CategoryOut,
    Detail,
    Invalid,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductPatch,
    ReservationIn,
    ReservationOut,
    SkuProblem,
)
from meshkit.api import InvalidInput

router = Router()
_SKU_RE = re.compile(SKU_PATTERN)
ERRORS: dict[int, Any] = {400: Invalid, 401: Detail, 403: Detail}


class ProductFilters(Schema):
    category: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9-]*$")] | None = None
    search: Annotated[str, Field(max_length=100)] | None = None
    page: Annotated[int, Field(ge=1, le=100_000)] = 1
    page_size: Annotated[int, Field(ge=1, le=100)] = 20


def _products() -> QuerySet[Product]:
    return Product.objects.select_related("category")


def _product_or_404(sku: str, *, lock: bool = False) -> Product:
    # A string that cannot be a sku names no product; it never reaches the database.
    if not _SKU_RE.match(sku):
        raise HttpError(404, "No product with this sku.")
    queryset = _products().select_for_update(of=("self",)) if lock else _products()
    product = queryset.filter(sku=sku).first()
    if product is None:
        raise HttpError(404, "No product with this sku.")
    return product


def _category(slug: str | None) -> Category | None:
    if not slug:
        return None
    category = Category.objects.filter(slug=slug).first()
    if category is None:
        raise InvalidInput(f"Unknown category {slug!r}.", {"category": [f"no category {slug!r}"]})
    return category


# -- categories ---------------------------------------------------------------------------------


@router.get("categories", response=list[CategoryOut], tags=["products"], summary="List categories")
def list_categories(request: HttpRequest) -> QuerySet[Category]:
    return Category.objects.all()


@router.post(
    "categories",
    response={201: CategoryOut, 409: Detail, **ERRORS},
    auth=catalog_writer,
    tags=["products"],
    summary="Create a category (scope catalog:write)",
)
def create_category(request: HttpRequest, payload: CategoryIn) -> Status[Any]:
    try:
        with transaction.atomic():
            category = Category.objects.create(slug=payload.slug, name=payload.name)
    except IntegrityError:
        raise HttpError(409, "A category with this slug already exists.") from None
    return Status(201, category)


# -- products -----------------------------------------------------------------------------------


@router.get("products", response={200: ProductPage, 400: Invalid}, tags=["products"], summary="List products")
def list_products(request: HttpRequest, filters: Query[ProductFilters]) -> dict[str, Any]:
    """Active products, filtered by category slug and a search in sku, name and description."""
    reservations.reclaim_expired()  # the stock shown includes what expired leases held
    queryset = _products().filter(active=True)
    if filters.category:
        queryset = queryset.filter(category__slug=filters.category)
    if filters.search:
        term = filters.search
        queryset = queryset.filter(
            Q(sku__icontains=term) | Q(name__icontains=term) | Q(description__icontains=term)
        )
    offset = (filters.page - 1) * filters.page_size
    return {
        "items": list(queryset[offset : offset + filters.page_size]),
        "count": queryset.count(),
        "page": filters.page,
        "page_size": filters.page_size,
    }


@router.get(
    "products/{sku}", response={200: ProductOut, 404: Detail}, tags=["products"], summary="One product"
)
def get_product(request: HttpRequest, sku: str) -> Product:
    reservations.reclaim_expired()
    return _product_or_404(sku)


@router.post(
    "products",
    response={201: ProductOut, 409: Detail, **ERRORS},
    auth=catalog_writer,
    tags=["products"],
    summary="Create a product (scope catalog:write)",
)
def create_product(request: HttpRequest, payload: ProductIn) -> Status[Any]:
    data = payload.dict()
    data["category"] = _category(payload.category)
    try:
        with transaction.atomic():
            product = Product.objects.create(**data)
    except IntegrityError:
        raise HttpError(409, "A product with this sku already exists.") from None
    return Status(201, _products().get(pk=product.pk))


@router.patch(
    "products/{sku}",
    response={200: ProductOut, 404: Detail, **ERRORS},
    auth=catalog_writer,
    tags=["products"],
    summary="Change a product (scope catalog:write)",
)
def update_product(request: HttpRequest, sku: str, payload: ProductPatch) -> Product:
    changes = payload.dict(exclude_unset=True)
    nulls = sorted(field for field, value in changes.items() if value is None and field != "category")
    if nulls:
        raise InvalidInput(
            f"These fields cannot be null: {', '.join(nulls)}.",
            {field: ["may not be null"] for field in nulls},
        )
    with transaction.atomic():
        # Locked: a stock correction must not interleave with a reservation's decrement.
        product = _product_or_404(sku, lock=True)
        if "category" in changes:
            changes["category"] = _category(changes["category"])
        for field, value in changes.items():
            setattr(product, field, value)
        product.save()
    return _products().get(pk=product.pk)


# -- reservations -------------------------------------------------------------------------------


def _reservation_out(reservation: Reservation) -> dict[str, Any]:
    return {
        "reservation_id": reservation.reservation_id,
        "status": reservation.status,
        "items": list(reservation.lines.all()),
        "total": reservations.total(reservation),
        "created_at": reservation.created_at,
        "expires_at": reservation.expires_at,
    }


RESERVATION_ERRORS: dict[int, Any] = {
    **ERRORS,
    400: Invalid | SkuProblem,
    404: Detail,
    409: SkuProblem,
    422: Detail,
}


@router.post(
    "reservations",
    response={201: ReservationOut, **RESERVATION_ERRORS},
    auth=reserving_service,
    tags=["reservations"],
    summary="Reserve stock, all or nothing (service token, audience catalog)",
)
def create_reservation(request: HttpRequest, payload: ReservationIn) -> Status[Any]:
    """Idempotent on ``reservation_id``: a retry returns the first result and reserves nothing twice.

    The stock is held until ``expires_at`` (``CATALOG_RESERVATION_TTL``, 60 s by default): commit
    or release before then, or catalog puts it back on sale.

    400 with ``skus`` names unknown or inactive products; 409 with ``skus`` names those short of
    stock (nothing is reserved then); 422 means the id was used with other items.
    """
    items = [reservations.Item(item.sku, item.qty) for item in payload.items]
    try:
        outcome = reservations.reserve(payload.reservation_id, items, client_id=client_id_of(request))
    except reservations.ReservationError as exc:
        body: dict[str, Any] = {"detail": exc.detail}
        if exc.skus:
            body["skus"] = exc.skus
        elif exc.status == 409:
            body["skus"] = []
        return Status(exc.status, body)
    return Status(201, _reservation_out(outcome.reservation))


def _transition(request: HttpRequest, reservation_id: uuid.UUID, release: bool) -> Status[Any]:
    try:
        if release:
            reservation = reservations.release(reservation_id, client_id=client_id_of(request))
        else:
            reservation = reservations.commit(reservation_id)
    except reservations.NotFound as exc:
        raise HttpError(404, str(exc)) from None
    except reservations.ReservationError as exc:
        return Status(exc.status, {"detail": exc.detail, "skus": exc.skus})
    return Status(200, _reservation_out(reservation))


@router.post(
    "reservations/{uuid:reservation_id}/release",
    response={200: ReservationOut, **RESERVATION_ERRORS},
    auth=reserving_service,
    tags=["reservations"],
    summary="Give the reserved stock back (idempotent)",
)
def release_reservation(request: HttpRequest, reservation_id: uuid.UUID) -> Status[Any]:
    """Releasing an unknown id records it as released, so a late reservation under it is refused."""
    return _transition(request, reservation_id, release=True)


@router.post(
    "reservations/{uuid:reservation_id}/commit",
    response={200: ReservationOut, **RESERVATION_ERRORS},
    auth=reserving_service,
    tags=["reservations"],
    summary="Turn the reservation into a sale (idempotent)",
)
def commit_reservation(request: HttpRequest, reservation_id: uuid.UUID) -> Status[Any]:
    return _transition(request, reservation_id, release=False)
