from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from orders.shop.models import Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    fields = ("sku", "qty", "unit_price")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Read-only: an order's lines and total mirror a reservation at catalog and must not drift."""

    list_display = ("id", "user_id", "status", "total", "currency", "created_at")
    list_filter = ("status", "currency")
    search_fields = ("id", "user_id", "idempotency_key", "reservation_id")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "user_id",
        "idempotency_key",
        "request_hash",
        "reservation_id",
        "status",
        "total",
        "currency",
        "created_at",
        "updated_at",
    )
    inlines = [OrderLineInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
