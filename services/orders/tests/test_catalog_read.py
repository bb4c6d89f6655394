"""The read-only models of catalog's tables: readable through the catalog alias, and nothing more."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg2
import pytest
from django.db import DatabaseError, connections, transaction
from psycopg2 import errors

from conftest import add_product
from orders.catalogread.models import Product, names_by_sku
from orders.routers import CatalogReadRouter, ReadOnlyModelError

pytestmark = pytest.mark.django_db(databases=["default", "catalog"])


@contextlib.contextmanager
def refused_by_postgres(error: type[Exception], using: str) -> Iterator[None]:
    """Expect PostgreSQL itself to refuse (Django wraps psycopg2's error; the cause is what counts)."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic(using=using):
        yield
    assert isinstance(caught.value.__cause__, error), repr(caught.value.__cause__)


def test_names_come_from_catalogs_table(catalog_db) -> None:
    add_product(catalog_db, "MUG-1", "Enamel mug", category="kitchen")
    add_product(catalog_db, "PEN-1", "Fountain pen")
    assert names_by_sku({"MUG-1", "PEN-1", "GONE"}) == {"MUG-1": "Enamel mug", "PEN-1": "Fountain pen"}
    mug = Product.objects.select_related("category").get(sku="MUG-1")
    assert mug.category.slug == "kitchen"
    assert Product.objects.db == "catalog"


def test_the_router_refuses_writes_before_any_sql(catalog_db) -> None:
    add_product(catalog_db, "MUG-1", "Enamel mug", stock=3)
    mug = Product.objects.get(sku="MUG-1")
    mug.stock = 1000
    with pytest.raises(ReadOnlyModelError):
        mug.save()
    with pytest.raises(ReadOnlyModelError):
        Product.objects.filter(sku="MUG-1").update(stock=1000)
    with pytest.raises(ReadOnlyModelError):
        Product.objects.filter(sku="MUG-1").delete()
    assert Product.objects.get(sku="MUG-1").stock == 3


def test_migrate_never_targets_catalogs_tables_or_alias() -> None:
    assert connections["catalog"].settings_dict["USER"] == "orders_reader"
    assert CatalogReadRouter().allow_migrate("default", "catalogread", "product") is False
    assert CatalogReadRouter().allow_migrate("catalog", "shop", "order") is False
    assert CatalogReadRouter().allow_migrate("default", "shop", "order") is None


def test_orders_role_cannot_write_catalogs_schema(catalog_db) -> None:
    """orders' own connection has no rights at all in catalog's schema."""
    add_product(catalog_db, "MUG-1", "Enamel mug", stock=3)
    with (
        refused_by_postgres(errors.InsufficientPrivilege, "default"),
        connections["default"].cursor() as cursor,
    ):
        cursor.execute("UPDATE catalog.products_product SET stock = 1000")
    with (
        refused_by_postgres(errors.InsufficientPrivilege, "default"),
        connections["default"].cursor() as cursor,
    ):
        cursor.execute("INSERT INTO catalog.products_category (slug, name) VALUES ('x', 'X')")


def test_reader_role_may_only_select(catalog_db) -> None:
    """The reader role's writes fail twice over: read-only by default, and without write grants."""
    add_product(catalog_db, "MUG-1", "Enamel mug", stock=3)
    with (
        refused_by_postgres(errors.ReadOnlySqlTransaction, "catalog"),
        connections["catalog"].cursor() as cursor,
    ):
        cursor.execute("INSERT INTO products_category (slug, name) VALUES ('x', 'X')")
    # Lifting the read-only default (a session may do so) still leaves only SELECT.
    conn = psycopg2.connect(
        os.environ["CATALOG_READ_DATABASE_URL"], options="-c default_transaction_read_only=off"
    )
    try:
        with pytest.raises(errors.InsufficientPrivilege), conn.cursor() as cursor:
            cursor.execute("UPDATE catalog.products_product SET stock = 1000")
        conn.rollback()
        with conn.cursor() as cursor:
            cursor.execute("SELECT stock FROM catalog.products_product WHERE sku = 'MUG-1'")
            assert cursor.fetchone() == (3,)
    finally:
        conn.close()
