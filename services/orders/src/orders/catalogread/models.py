"""Read-only models of catalog's tables, for product names and categories in order listings.

Generated with ``django-admin inspectdb --database catalog products_product products_category``
against catalog's migrated schema, then extended by hand: model names, ``__str__``, orderings,
the ``related_name`` and ``names_by_sku``. Keep ``managed = False`` and
the ``db_table`` names: catalog owns these tables and migrates them; when catalog changes a column
we use, regenerate and compare.

They are served by the ``catalog`` database alias (role ``orders_reader``, SELECT only on
catalog's schema); ``orders.routers.CatalogReadRouter`` sends them there and refuses writes.
Never add a ForeignKey from orders' own models to these: there are no foreign keys across schemas.
"""

from __future__ import annotations

from django.db import models


class Category(models.Model):
    id = models.BigAutoField(primary_key=True)
    slug = models.CharField(unique=True, max_length=64)
    name = models.CharField(max_length=120)

    class Meta:
        managed = False
        db_table = "products_category"
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    id = models.BigAutoField(primary_key=True)
    sku = models.CharField(unique=True, max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    stock = models.IntegerField()
    active = models.BooleanField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # DO_NOTHING: catalog's own constraints govern deletes; we never delete here.
    category = models.ForeignKey(Category, models.DO_NOTHING, blank=True, null=True, related_name="products")

    class Meta:
        managed = False
        db_table = "products_product"
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


def names_by_sku(skus: list[str] | set[str]) -> dict[str, str]:
    """Current product names for ``skus`` (one query on the read-only connection)."""
    if not skus:
        return {}
    return dict(Product.objects.filter(sku__in=sorted(skus)).values_list("sku", "name"))
