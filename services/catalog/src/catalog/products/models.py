"""Products, their stock, and the reservations orders hold against that stock.

orders reads ``products_product`` and ``products_category`` through read-only models of its own
(the inspectdb pattern): those table names are a contract, hence the explicit ``db_table``.
Renaming a column or a table here needs a matching change in orders' ``catalogread`` models.
"""

from __future__ import annotations

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
PRICE_MAX_DIGITS = 10
PRICE_DECIMAL_PLACES = 2


class Category(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)

    class Meta:
        db_table = "products_category"
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True, validators=[RegexValidator(SKU_PATTERN)])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=5000)
    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, null=True, blank=True, related_name="products"
    )
    price = models.DecimalField(
        max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(max_length=3, default="EUR", validators=[RegexValidator(CURRENCY_PATTERN)])
    stock = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "products_product"
        ordering = ["sku"]
        constraints = [
            # The last line of defence against overselling: whatever path writes stock (API, admin,
            # a hand-written UPDATE), PostgreSQL refuses a negative count.
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_non_negative"),
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class Reservation(models.Model):
    """Stock held for a caller (orders) under the caller's own id, until committed or released.

    ``reservation_id`` is chosen by the caller so that a retried request finds the first attempt's
    result instead of reserving twice. A release of an id never seen is stored too (with no lines),
    so that a reservation request still in flight when its caller gave up cannot reserve later.
    """

    class Status(models.TextChoices):
        RESERVED = "reserved"
        COMMITTED = "committed"
        RELEASED = "released"

    reservation_id = models.UUIDField(unique=True)
    client_id = models.CharField(max_length=200, blank=True, help_text="The service that made it.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RESERVED)
    # The lease: a reservation still held after this is taken back (stock returned, status
    # released). Nullable, so rows written by a release before it existed stay valid: those
    # expire ``CATALOG_RESERVATION_TTL`` after ``created_at``.
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Finding expired leases is one index scan over held reservations only.
            models.Index(
                fields=["expires_at"], condition=Q(status="reserved"), name="reservation_held_expiry"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} ({self.status})"


class ReservationLine(models.Model):
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    sku = models.CharField(max_length=64)
    qty = models.PositiveIntegerField()
    # The price at reservation time: what the customer is charged even if the catalog changes later.
    unit_price = models.DecimalField(max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES)
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.UniqueConstraint(fields=["reservation", "sku"], name="reservation_line_unique_sku"),
            models.CheckConstraint(condition=Q(qty__gt=0), name="reservation_line_qty_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.qty} x {self.sku}"
