"""Reserve, commit and release stock: all or nothing, idempotent, never overselling.

Every path that changes stock locks the products' rows (``SELECT … FOR UPDATE``) in sku order, so
two reservations touching the same products queue instead of deadlocking, and each sees the
stock the other left. The CHECK constraint on ``stock`` backs this up in the database itself.

A reservation is a lease: held stock that is neither committed nor released within
``CATALOG_RESERVATION_TTL`` seconds goes back on sale, whatever became of the caller. Expired
leases are taken back lazily, by the next reservation or product read, so stock is never shown
or refused while held by a lease that has run out; a commit that comes before that still wins.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from prometheus_client import Counter

from catalog.products.models import Product, Reservation, ReservationLine

RESERVATIONS = Counter(
    "catalog_reservations",
    "Reservation requests by outcome.",
    ("outcome",),
)
# Outcomes, one label value each (bounded, so the counter's series stay few).
RESERVED = "reserved"
REPLAYED = "replayed"
INSUFFICIENT_STOCK = "insufficient_stock"
UNKNOWN_SKU = "unknown_sku"
CONFLICT = "conflict"
COMMITTED = "committed"
RELEASED = "released"
EXPIRED = "expired"
OUTCOMES = (RESERVED, REPLAYED, INSUFFICIENT_STOCK, UNKNOWN_SKU, CONFLICT, COMMITTED, RELEASED, EXPIRED)
for _outcome in OUTCOMES:
    # Present from the first scrape, so rate() and absent() alerts work before the first event.
    RESERVATIONS.labels(_outcome)


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int


class ReservationError(Exception):
    """A reservation request that cannot be honoured; nothing was changed."""

    status = 409
    outcome = CONFLICT

    def __init__(self, detail: str, skus: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.skus = sorted(skus)


class UnknownProducts(ReservationError):
    status = 400
    outcome = UNKNOWN_SKU


class InsufficientStock(ReservationError):
    status = 409
    outcome = INSUFFICIENT_STOCK


class ReservationConflict(ReservationError):
    """The id is known with other items, or its state does not allow the transition."""

    outcome = CONFLICT

    def __init__(self, detail: str, status: int = 409) -> None:
        super().__init__(detail)
        self.status = status


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Outcome:
    reservation: Reservation
    replayed: bool


def _same_items(reservation: Reservation, items: Sequence[Item]) -> bool:
    held = sorted((line.sku, line.qty) for line in reservation.lines.all())
    return held == sorted((item.sku, item.qty) for item in items)


def _replay(reservation: Reservation, items: Sequence[Item]) -> Outcome:
    if reservation.status == Reservation.Status.RELEASED:
        raise ReservationConflict(f"Reservation {reservation.reservation_id} was released.")
    if not _same_items(reservation, items):
        raise ReservationConflict(
            f"Reservation {reservation.reservation_id} exists with different items.", status=422
        )
    return Outcome(reservation, replayed=True)


def _lock_products(skus: Sequence[str]) -> list[Product]:
    # Sorted by sku: every transaction takes its row locks in one global order, so none deadlock.
    return list(Product.objects.select_for_update().filter(sku__in=sorted(set(skus))).order_by("sku"))


def lease() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.CATALOG_RESERVATION_TTL)


def _expired(now: datetime.datetime) -> Q:
    # A NULL expires_at is a row from before leases existed: it expires a TTL after its creation.
    return Q(status=Reservation.Status.RESERVED) & (
        Q(expires_at__lte=now) | Q(expires_at__isnull=True, created_at__lte=now - lease())
    )


def reclaim_expired(limit: int = 100) -> int:
    """Put the stock of expired leases back on sale; returns how many were taken back."""
    now = timezone.now()
    ids = list(Reservation.objects.filter(_expired(now)).values_list("reservation_id", flat=True)[:limit])
    reclaimed = 0
    for reservation_id in ids:
        with transaction.atomic():
            # Re-checked under the row lock: a commit or release may have come first.
            held = Reservation.objects.select_for_update().filter(_expired(now))
            reservation = held.filter(reservation_id=reservation_id).first()
            if reservation is None:
                continue
            _give_back(reservation)
        RESERVATIONS.labels(EXPIRED).inc()
        reclaimed += 1
    return reclaimed


def _give_back(reservation: Reservation) -> None:
    lines = list(reservation.lines.all())
    _lock_products([line.sku for line in lines])
    for line in lines:
        Product.objects.filter(pk=line.product_id).update(stock=F("stock") + line.qty)
    reservation.status = Reservation.Status.RELEASED
    reservation.save(update_fields=["status", "updated_at"])


def reserve(reservation_id: uuid.UUID, items: Sequence[Item], client_id: str = "") -> Outcome:
    """Hold ``items`` under ``reservation_id``; a repeat of the same request returns the first result."""
    reclaim_expired()
    try:
        outcome = _reserve(reservation_id, items, client_id)
    except ReservationError as exc:
        RESERVATIONS.labels(exc.outcome).inc()
        raise
    except IntegrityError:
        # A concurrent request with the same id won the insert; ours rolled back entirely.
        existing = Reservation.objects.filter(reservation_id=reservation_id).first()
        if existing is None:
            raise
        try:
            outcome = _replay(existing, items)
        except ReservationError as exc:
            RESERVATIONS.labels(exc.outcome).inc()
            raise
    RESERVATIONS.labels(REPLAYED if outcome.replayed else RESERVED).inc()
    return outcome


def _reserve(reservation_id: uuid.UUID, items: Sequence[Item], client_id: str) -> Outcome:
    with transaction.atomic():
        products = {product.sku: product for product in _lock_products([item.sku for item in items])}
        # Looked up after the locks: a same-id request that held them has committed by now.
        existing = Reservation.objects.filter(reservation_id=reservation_id).first()
        if existing is not None:
            return _replay(existing, items)
        unknown = [item.sku for item in items if item.sku not in products or not products[item.sku].active]
        if unknown:
            raise UnknownProducts("Unknown or inactive products.", unknown)
        short = [item.sku for item in items if products[item.sku].stock < item.qty]
        if short:
            raise InsufficientStock("Insufficient stock.", short)
        reservation = Reservation.objects.create(
            reservation_id=reservation_id, client_id=client_id, expires_at=timezone.now() + lease()
        )
        lines = []
        for item in items:
            product = products[item.sku]
            Product.objects.filter(pk=product.pk).update(stock=F("stock") - item.qty)
            lines.append(
                ReservationLine(
                    reservation=reservation,
                    product=product,
                    sku=product.sku,
                    qty=item.qty,
                    unit_price=product.price,
                    currency=product.currency,
                )
            )
        ReservationLine.objects.bulk_create(lines)
    return Outcome(reservation, replayed=False)


def _locked_reservation(reservation_id: uuid.UUID) -> Reservation | None:
    return Reservation.objects.select_for_update().filter(reservation_id=reservation_id).first()


def commit(reservation_id: uuid.UUID) -> Reservation:
    """The held stock is sold; committing twice is a no-op, committing a released one a conflict."""
    with transaction.atomic():
        reservation = _locked_reservation(reservation_id)
        if reservation is None:
            raise NotFound(f"No reservation {reservation_id}.")
        if reservation.status == Reservation.Status.RELEASED:
            raise ReservationConflict(f"Reservation {reservation_id} was released.")
        if reservation.status == Reservation.Status.RESERVED:
            reservation.status = Reservation.Status.COMMITTED
            reservation.save(update_fields=["status", "updated_at"])
            RESERVATIONS.labels(COMMITTED).inc()
    return reservation


def release(reservation_id: uuid.UUID, client_id: str = "") -> Reservation:
    """Give the held stock back; releasing twice is a no-op, releasing a committed one a conflict.

    An unknown id is recorded as released: the caller may be giving up on a reservation request
    that has not reached us yet, and that request must then find the id spent.
    """
    try:
        with transaction.atomic():
            reservation = _locked_reservation(reservation_id)
            if reservation is None:
                reservation = Reservation.objects.create(
                    reservation_id=reservation_id, client_id=client_id, status=Reservation.Status.RELEASED
                )
                return reservation
            if reservation.status == Reservation.Status.COMMITTED:
                raise ReservationConflict(f"Reservation {reservation_id} was committed.")
            if reservation.status == Reservation.Status.RESERVED:
                _give_back(reservation)
                RESERVATIONS.labels(RELEASED).inc()
            return reservation
    except IntegrityError:
        # A reservation with this id was inserted meanwhile: release that one.
        return release(reservation_id, client_id)


def total(reservation: Reservation) -> Decimal:
    return sum((line.unit_price * line.qty for line in reservation.lines.all()), Decimal("0"))
