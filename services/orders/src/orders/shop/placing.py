"""Placing an order: claim the Idempotency-Key, reserve at catalog, store, commit, or undo.

The invariant: stock taken at catalog either belongs to a confirmed order or is given back. Every
failure after the reservation releases it before the client hears about the failure; when even
the release fails, the claim row stays behind with its reservation id so that a retry with the
same key (or ``release_stale_orders``) can finish the job.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, models, transaction
from django.utils import timezone
from prometheus_client import Counter

from orders.shop.catalog_client import (
    CatalogClient,
    CatalogError,
    CatalogNotReached,
    CatalogRejected,
    CatalogUnavailable,
)
from orders.shop.models import Order, OrderLine

logger = logging.getLogger(__name__)

ORDERS_CREATED = Counter("orders_created", "Orders confirmed (stock committed at catalog).")
ORDER_FAILURES = Counter(
    "orders_failed",
    "Order attempts that stored no order, by reason.",
    ("reason",),
)
COMPENSATIONS = Counter(
    "orders_compensations",
    "Reservations given back after a failure, by result (released, failed).",
    ("result",),
)
_REASONS = (
    "insufficient_stock",
    "unknown_sku",
    "catalog_unavailable",
    "catalog_error",
    "storage",
    "too_large",
)
for _reason in _REASONS:
    ORDER_FAILURES.labels(_reason)
for _result in ("released", "failed"):
    COMPENSATIONS.labels(_result)


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int


@dataclass(eq=False)
class OrderFailed(Exception):
    """The client's answer when no order results: an HTTP status and a JSON body."""

    status: int
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


class StockLost(OrderFailed):
    """catalog released the reservation (its lease expired, or orders released it) before the commit."""


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


def request_hash(items: Sequence[Item]) -> str:
    """The body's fingerprint: the same items in any order hash the same."""
    canonical = json.dumps(sorted([item.sku, item.qty] for item in items), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stale_after() -> datetime.timedelta:
    # Longer than any live attempt can take: reserve, commit and release, each with retries.
    return datetime.timedelta(seconds=max(30.0, 8 * settings.ORDERS_CATALOG_TIMEOUT))


def place_order(user_id: str, key: str, items: Sequence[Item], client: CatalogClient) -> Placed:
    fingerprint = request_hash(items)
    lost: StockLost | None = None
    for _ in range(2):
        try:
            with transaction.atomic():
                order = Order.objects.create(user_id=user_id, idempotency_key=key, request_hash=fingerprint)
        except IntegrityError:
            existing = Order.objects.filter(user_id=user_id, idempotency_key=key).first()
            if existing is None:
                continue  # the other attempt failed and removed its claim meanwhile: claim again
            placed = _resume(existing, fingerprint, client)
            if placed is not None:
                return placed
            continue
        try:
            return Placed(_place(order, items, client), replayed=False)
        except StockLost as exc:
            # We were slower than catalog's lease and the claim is gone: reserve afresh, once.
            lost = exc
            continue
    raise lost or _in_progress(None)


def _in_progress(existing: Order | None) -> OrderFailed:
    """409 for a key whose attempt is still running, with the real wait in Retry-After.

    A live attempt ends within ``stale_after``; one that died mid-way (its worker killed) is
    taken over by the first retry after that. So the wait is what is left of ``stale_after``.
    """
    wait = 1.0
    if existing is not None:
        wait = (existing.updated_at + stale_after() - timezone.now()).total_seconds()
    return OrderFailed(
        409,
        "Another request with this Idempotency-Key is in progress; retry after the time in Retry-After.",
        retry_after=max(1, math.ceil(wait)),
    )


def _resume(existing: Order, fingerprint: str, client: CatalogClient) -> Placed | None:
    """A second request with a known key: replay, finish, wait, or take over a dead attempt."""
    if existing.request_hash != fingerprint:
        raise OrderFailed(422, "This Idempotency-Key was used with a different request body.")
    if existing.status == Order.Status.CONFIRMED:
        return Placed(existing, replayed=True)
    stale = timezone.now() - existing.updated_at >= stale_after()
    if existing.status == Order.Status.ABANDONED or stale:
        # The earlier attempt failed (the client was told no order was placed) or died mid-way.
        # Give its reservation back, then start afresh under the same key.
        outcome = _compensate(existing, client)
        if outcome == "committed":
            return Placed(_confirm(existing), replayed=True)
        if outcome == "failed":
            raise OrderFailed(503, "catalog is unavailable; no order was placed.", retry_after=5)
        return None
    if existing.status == Order.Status.RESERVED:
        # Lines are stored and catalog holds the stock: finishing is what the client asked for.
        try:
            return Placed(_commit(existing, client), replayed=True)
        except StockLost:
            # The attempt died and its lease ran out at catalog; its claim is gone: start afresh.
            return None
    raise _in_progress(existing)


def _place(order: Order, items: Sequence[Item], client: CatalogClient) -> Order:
    try:
        reservation = client.reserve(order.reservation_id, [{"sku": i.sku, "qty": i.qty} for i in items])
    except CatalogRejected as exc:
        # A definite answer: catalog reserved nothing, so dropping the claim loses nothing.
        _drop_claim(order)
        raise _rejection(exc) from None
    except CatalogNotReached as exc:
        _drop_claim(order)
        ORDER_FAILURES.labels("catalog_unavailable").inc()
        raise OrderFailed(
            503, f"catalog is unavailable ({exc}); no order was placed.", retry_after=5
        ) from None
    except CatalogUnavailable as exc:
        # Catalog may have reserved before the connection broke: give it back to be sure.
        _compensate(order, client)
        ORDER_FAILURES.labels("catalog_unavailable").inc()
        raise OrderFailed(
            503, f"catalog is unavailable ({exc}); no order was placed.", retry_after=5
        ) from None
    except CatalogError as exc:
        _compensate(order, client)
        ORDER_FAILURES.labels("catalog_error").inc()
        raise OrderFailed(502, f"catalog failed ({exc}); no order was placed.") from None
    try:
        lines, total, currency = _priced_lines(reservation, items)
    except ValueError as exc:
        _compensate(order, client)
        ORDER_FAILURES.labels("catalog_error").inc()
        raise OrderFailed(502, f"catalog's reservation was unusable ({exc}); no order was placed.") from None
    largest = largest_value(Order._meta.get_field("total"))
    if total > largest:
        # A fact about this request, not a passing failure: no retry can store it, so no 503.
        _compensate(order, client)
        ORDER_FAILURES.labels("too_large").inc()
        raise OrderFailed(
            422,
            f"The order's total {total:,.2f} {currency} is more than an order can hold "
            f"({largest:,.2f}); no order was placed. Split it into smaller orders.",
        )
    try:
        with transaction.atomic():
            OrderLine.objects.bulk_create(
                [OrderLine(order=order, sku=sku, qty=qty, unit_price=price) for sku, qty, price in lines]
            )
            order.total, order.currency, order.status = total, currency, Order.Status.RESERVED
            order.save(update_fields=["total", "currency", "status", "updated_at"])
    except DataError:
        # A value the columns cannot hold: the same request would fail again, so it is not a 503.
        logger.exception("order %s does not fit its columns; releasing its reservation", order.id)
        _compensate(order, client)
        ORDER_FAILURES.labels("too_large").inc()
        raise OrderFailed(422, "The order does not fit the storage limits; no order was placed.") from None
    except DatabaseError:
        logger.exception("storing order %s failed; releasing its reservation", order.id)
        _compensate(order, client)
        ORDER_FAILURES.labels("storage").inc()
        raise OrderFailed(503, "The order could not be stored; no order was placed.", retry_after=5) from None
    return _commit(order, client)


def largest_value(column: object) -> Decimal:
    """The largest amount a ``DecimalField`` stores: 9,999,999,999.99 for 12 digits, 2 places."""
    if not isinstance(column, models.DecimalField):
        raise TypeError(f"{column!r} is not a DecimalField")
    digits, places = column.max_digits, column.decimal_places
    if digits is None or places is None:
        raise TypeError(f"{column!r} has no max_digits or decimal_places")
    return Decimal(10) ** (digits - places) - Decimal(1).scaleb(-places)


def _rejection(exc: CatalogRejected) -> OrderFailed:
    skus = exc.body.get("skus") if isinstance(exc.body, dict) else None
    skus = [str(s) for s in skus] if isinstance(skus, list) else []
    if exc.status == 409 and skus:
        ORDER_FAILURES.labels("insufficient_stock").inc()
        return OrderFailed(409, "Insufficient stock.", {"skus": skus})
    if exc.status == 400 and skus:
        ORDER_FAILURES.labels("unknown_sku").inc()
        return OrderFailed(400, "Unknown or unavailable products.", {"skus": skus})
    # Anything else (our credentials refused, a conflict on our own reservation id) is ours to fix.
    ORDER_FAILURES.labels("catalog_error").inc()
    logger.error("catalog refused a reservation: HTTP %s %s", exc.status, exc.body)
    return OrderFailed(502, f"catalog refused the reservation (HTTP {exc.status}); no order was placed.")


def _priced_lines(reservation: dict[str, Any], items: Sequence[Item]) -> tuple[list[Any], Decimal, str]:
    """Check catalog's answer covers exactly what we asked for, in one currency, and price it."""
    wanted = {item.sku: item.qty for item in items}
    got: dict[str, tuple[int, Decimal]] = {}
    currencies = set()
    for line in reservation.get("items") or []:
        try:
            price = Decimal(str(line["unit_price"]))
            got[str(line["sku"])] = (int(line["qty"]), price)
            currencies.add(str(line["currency"]))
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise ValueError(f"malformed line {line!r}") from exc
        if not price.is_finite() or price < 0:
            raise ValueError(f"bad price {line['unit_price']!r}")
    if {sku: qty for sku, (qty, _) in got.items()} != wanted:
        raise ValueError("items differ from the request")
    if len(currencies) != 1:
        raise ValueError(f"expected one currency, got {sorted(currencies)}")
    lines = [(sku, qty, price) for sku, (qty, price) in sorted(got.items())]
    total = sum((price * qty for _, qty, price in lines), Decimal("0"))
    return lines, total, currencies.pop()


def _commit(order: Order, client: CatalogClient) -> Order:
    try:
        client.commit(order.reservation_id)
    except CatalogRejected as exc:
        if exc.status == 404 or _released(exc):
            # Released or unknown at catalog: the stock is not ours, so the order cannot stand.
            _drop_claim(order)
            ORDER_FAILURES.labels("catalog_error").inc()
            raise StockLost(502, "catalog no longer holds this order's stock; no order was placed.") from None
        reason = f"catalog refused the commit (HTTP {exc.status})"
    except CatalogError as exc:
        reason = f"catalog could not commit ({exc})"
    else:
        return _confirm(order)
    if _compensate(order, client) == "committed":
        # The commit had gone through; only its answer was lost. The order stands.
        return _confirm(order)
    ORDER_FAILURES.labels("catalog_unavailable").inc()
    raise OrderFailed(503, f"{reason}; no order was placed.", retry_after=5)


def _confirm(order: Order) -> Order:
    order.status = Order.Status.CONFIRMED
    order.save(update_fields=["status", "updated_at"])
    ORDERS_CREATED.inc()
    return order


def _released(exc: CatalogRejected) -> bool:
    detail = exc.body.get("detail", "") if isinstance(exc.body, dict) else ""
    return exc.status == 409 and "released" in str(detail)


def _compensate(order: Order, client: CatalogClient) -> str:
    """Release the order's reservation; drop the claim only once catalog confirms the release.

    Returns ``released``, ``committed`` (catalog says the reservation was already sold), or
    ``failed`` (catalog unreachable: the claim stays, naming the reservation to release later).
    """
    try:
        client.release(order.reservation_id)
    except CatalogRejected as exc:
        if exc.status == 409 and "committed" in str(exc.body):
            return "committed"
        logger.error(
            "release of reservation %s refused: HTTP %s %s", order.reservation_id, exc.status, exc.body
        )
        return _abandon(order)
    except CatalogError as exc:
        logger.error("release of reservation %s failed (%s); left for a retry", order.reservation_id, exc)
        return _abandon(order)
    COMPENSATIONS.labels("released").inc()
    _drop_claim(order)
    return "released"


def release_abandoned(order: Order, client: CatalogClient) -> str:
    """Settle an attempt that ended without an answer: ``released``, ``committed`` or ``failed``."""
    outcome = _compensate(order, client)
    if outcome == "committed":
        # The order was sold at catalog after all: it stands.
        _confirm(order)
    return outcome


def _abandon(order: Order) -> str:
    """Mark the claim so the next attempt releases its reservation first, instead of waiting."""
    COMPENSATIONS.labels("failed").inc()
    try:
        Order.objects.filter(pk=order.pk).update(status=Order.Status.ABANDONED, updated_at=timezone.now())
    except DatabaseError:
        # Our own database is failing too; the claim stays as it was and becomes stale in time.
        logger.exception("could not mark order %s abandoned", order.id)
    return "failed"


def _drop_claim(order: Order) -> None:
    # Lines go with it (CASCADE): "no order stored" means no trace but the log and the metrics.
    Order.objects.filter(pk=order.pk).delete()
