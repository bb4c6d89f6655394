from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from catalog.products.models import Category, Product, Reservation, ReservationLine


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("slug", "name")
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "category", "price", "currency", "stock", "active", "updated_at")
    list_filter = ("active", "category", "currency")
    search_fields = ("sku", "name", "description")
    list_select_related = ("category",)
    readonly_fields = ("created_at", "updated_at")


class ReservationLineInline(admin.TabularInline):
    model = ReservationLine
    extra = 0
    can_delete = False
    fields = ("sku", "qty", "unit_price", "currency")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    """Read-only: stock moves only through the API, where every change is locked and counted."""

    list_display = ("reservation_id", "client_id", "status", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("reservation_id", "client_id")
    readonly_fields = ("reservation_id", "client_id", "status", "created_at", "updated_at")
    inlines = [ReservationLineInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
