"""Orders and their lines, priced with what catalog returned when it reserved the stock."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q

PRICE_MAX_DIGITS = 12
PRICE_DECIMAL_PLACES = 2


class Order(models.Model):
    """One customer order. The row is written first as a claim on the Idempotency-Key.

    ``reserving``: the claim exists, catalog is being asked for stock (no lines yet).
    ``reserved``: catalog holds the stock and the lines are stored; the commit is pending.
    ``confirmed``: catalog committed the reservation; this is what customers see.
    ``abandoned``: the attempt failed and could not give its reservation back (catalog was
    unreachable); the next request with the key, or ``release_abandoned_orders``, releases it first.
    A failed attempt that did release deletes its claim, so a retry with the same key starts again.
    """

    class Status(models.TextChoices):
        RESERVING = "reserving"
        RESERVED = "reserved"
        CONFIRMED = "confirmed"
        ABANDONED = "abandoned"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The principal's subject: users live in identity's schema, so no foreign key across schemas.
    user_id = models.CharField(max_length=200, db_index=True)
    idempotency_key = models.CharField(max_length=200)
    # SHA-256 of the request body in canonical form: the same key with another body is refused.
    request_hash = models.CharField(max_length=64)
    reservation_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RESERVING)
    total = models.DecimalField(max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES, default=0)
    currency = models.CharField(max_length=3, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The database decides which of two simultaneous requests with one key goes ahead.
            models.UniqueConstraint(
                fields=["user_id", "idempotency_key"], name="order_idempotency_key_unique"
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="order_total_non_negative"),
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    qty = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.UniqueConstraint(fields=["order", "sku"], name="order_line_unique_sku"),
            models.CheckConstraint(condition=Q(qty__gt=0), name="order_line_qty_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.qty} x {self.sku}"

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.qty
