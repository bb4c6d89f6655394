"""Fixtures of orders' tests: catalog's tables in the session database, and a catalog to write to."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg2
import pytest

from mesh.bootstrap import service_url
from mesh.testing import django_db_setup  # noqa: F401 - migrate the session's real database


def session_database() -> str:
    return urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")


@pytest.fixture(scope="session")
def catalog_url(admin_url: str) -> str:
    """catalog's own role on the session database (it owns the catalog schema)."""
    return service_url(admin_url, session_database(), "catalog")


@pytest.fixture(scope="session", autouse=True)
def catalog_tables(catalog_url: str) -> None:
    """Run catalog's migrations into its schema, as its release would; the read models need them."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "catalog.settings",
        "DATABASE_URL": catalog_url,
        "MESH_LOCAL_DEV": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", "migrate_locked", "--skip-checks", "-v", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def catalog_db(catalog_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection as catalog's owner, to put products in place; everything it made is removed after."""
    conn = psycopg2.connect(catalog_url)
    conn.autocommit = True
    try:
        yield conn
    finally:
        with conn.cursor() as cursor:
            # DELETE, not TRUNCATE: the test's own transaction still holds read locks on these tables
            # until after this teardown, and TRUNCATE would wait for it forever.
            for table in ("products_reservationline", "products_reservation", "products_product"):
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            cursor.execute("DELETE FROM products_category")
        conn.close()


def add_product(
    conn: psycopg2.extensions.connection,
    sku: str,
    name: str,
    price: str = "10.00",
    stock: int = 10,
    category: str | None = None,
) -> None:
    with conn.cursor() as cursor:
        category_id = None
        if category:
            cursor.execute(
                "INSERT INTO products_category (slug, name) VALUES (%s, %s)"
                " ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                [category, category.title()],
            )
            category_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO products_product (sku, name, description, price, currency, stock, active,"
            " category_id, created_at, updated_at)"
            " VALUES (%s, %s, '', %s, 'EUR', %s, true, %s, now(), now())",
            [sku, name, price, stock, category_id],
        )


def stock_of(conn: psycopg2.extensions.connection, sku: str) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT stock FROM products_product WHERE sku = %s", [sku])
        return cursor.fetchone()[0]
