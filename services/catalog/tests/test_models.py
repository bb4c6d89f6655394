"""What the database itself guarantees about products and reservations, whatever code writes."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from catalog.products import reservations
from catalog.products.models import Product, Reservation
from catalog.products.reservations import Item

pytestmark = pytest.mark.django_db


@pytest.fixture
def mug() -> Product:
    return Product.objects.create(sku="MUG-1", name="Mug", price=Decimal("12.50"), stock=5)


@pytest.fixture
def pen() -> Product:
    return Product.objects.create(sku="PEN-1", name="Pen", price=Decimal("3.10"), stock=2)


def stock(sku: str) -> int:
    return Product.objects.get(sku=sku).stock


def test_negative_stock_is_refused_by_the_check_constraint(mug: Product) -> None:
    with pytest.raises(IntegrityError, match="product_stock_non_negative"), transaction.atomic():
        Product.objects.filter(pk=mug.pk).update(stock=-1)
    assert stock("MUG-1") == 5


def test_duplicate_sku_is_refused(mug: Product) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(sku="MUG-1", name="Another", price=Decimal("1.00"))


def test_reserve_takes_stock_and_keeps_the_prices(mug: Product, pen: Product) -> None:
    outcome = reservations.reserve(uuid.uuid4(), [Item("MUG-1", 2), Item("PEN-1", 2)])
    assert not outcome.replayed
    assert (stock("MUG-1"), stock("PEN-1")) == (3, 0)
    assert reservations.total(outcome.reservation) == Decimal("31.20")
    lines = {line.sku: line.unit_price for line in outcome.reservation.lines.all()}
    assert lines == {"MUG-1": Decimal("12.50"), "PEN-1": Decimal("3.10")}


def test_short_stock_reserves_nothing_and_names_the_skus(mug: Product, pen: Product) -> None:
    with pytest.raises(reservations.InsufficientStock) as caught:
        reservations.reserve(uuid.uuid4(), [Item("MUG-1", 2), Item("PEN-1", 3)])
    assert caught.value.skus == ["PEN-1"]
    assert (stock("MUG-1"), stock("PEN-1")) == (5, 2)
    assert not Reservation.objects.exists()


def test_unknown_and_inactive_products_are_named(mug: Product, pen: Product) -> None:
    Product.objects.filter(sku="PEN-1").update(active=False)
    with pytest.raises(reservations.UnknownProducts) as caught:
        reservations.reserve(uuid.uuid4(), [Item("MUG-1", 1), Item("PEN-1", 1), Item("NOPE", 1)])
    assert caught.value.skus == ["NOPE", "PEN-1"]
    assert stock("MUG-1") == 5
    assert not Reservation.objects.exists()


def test_a_retry_returns_the_first_result_and_reserves_once(mug: Product) -> None:
    rid = uuid.uuid4()
    first = reservations.reserve(rid, [Item("MUG-1", 2)])
    again = reservations.reserve(rid, [Item("MUG-1", 2)])
    assert again.replayed
    assert again.reservation.pk == first.reservation.pk
    assert stock("MUG-1") == 3


def test_same_id_with_other_items_is_a_conflict(mug: Product) -> None:
    rid = uuid.uuid4()
    reservations.reserve(rid, [Item("MUG-1", 2)])
    with pytest.raises(reservations.ReservationConflict) as caught:
        reservations.reserve(rid, [Item("MUG-1", 3)])
    assert caught.value.status == 422
    assert stock("MUG-1") == 3


def test_release_gives_stock_back_once(mug: Product) -> None:
    rid = uuid.uuid4()
    reservations.reserve(rid, [Item("MUG-1", 4)])
    assert reservations.release(rid).status == Reservation.Status.RELEASED
    assert reservations.release(rid).status == Reservation.Status.RELEASED
    assert stock("MUG-1") == 5


def test_commit_keeps_the_stock_sold_and_cannot_be_released(mug: Product) -> None:
    rid = uuid.uuid4()
    reservations.reserve(rid, [Item("MUG-1", 4)])
    assert reservations.commit(rid).status == Reservation.Status.COMMITTED
    assert reservations.commit(rid).status == Reservation.Status.COMMITTED
    with pytest.raises(reservations.ReservationConflict):
        reservations.release(rid)
    assert stock("MUG-1") == 1


def test_a_released_reservation_cannot_be_committed(mug: Product) -> None:
    rid = uuid.uuid4()
    reservations.reserve(rid, [Item("MUG-1", 1)])
    reservations.release(rid)
    with pytest.raises(reservations.ReservationConflict):
        reservations.commit(rid)
    assert stock("MUG-1") == 5


def test_release_before_the_reservation_arrives_blocks_it(mug: Product) -> None:
    """The caller gave up (timeout) and released; its late request must not take stock."""
    rid = uuid.uuid4()
    reservations.release(rid)
    with pytest.raises(reservations.ReservationConflict):
        reservations.reserve(rid, [Item("MUG-1", 1)])
    assert stock("MUG-1") == 5


def test_commit_of_an_unknown_reservation_is_not_found() -> None:
    with pytest.raises(reservations.NotFound):
        reservations.commit(uuid.uuid4())
