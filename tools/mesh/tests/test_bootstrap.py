"""`mesh db bootstrap` against the real server: idempotent, and every role confined to its schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import errors

from mesh.bootstrap import bootstrap, drop_database, local_passwords, psql_script, service_url
from mesh.registry import Service

SHOP = Service(name="shop", port=1, schema="shop")
REPORTS = Service(name="reports", port=2, schema="reports", reads=("shop",))
FLEET = [SHOP, REPORTS]


@pytest.fixture
def database(admin_url: str) -> Iterator[str]:
    name = f"boot_{uuid.uuid4().hex[:8]}"
    bootstrap(admin_url, name, FLEET, local_passwords(FLEET))
    yield name
    drop_database(admin_url, name)


def connect(admin_url: str, database: str, role: str):
    conn = psycopg2.connect(service_url(admin_url, database, role))
    conn.autocommit = True
    return conn


def test_bootstrap_twice_changes_nothing(admin_url: str, database: str) -> None:
    bootstrap(admin_url, database, FLEET, local_passwords(FLEET))
    with connect(admin_url, database, "shop") as conn, conn.cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone() == ("shop",)


def test_role_owns_its_schema_and_cannot_write_anothers(admin_url: str, database: str) -> None:
    shop = connect(admin_url, database, "shop")
    reports = connect(admin_url, database, "reports")
    try:
        with shop.cursor() as cursor:
            cursor.execute("CREATE TABLE product (id int primary key, name text)")
            cursor.execute("INSERT INTO product VALUES (1, 'lamp')")
        with reports.cursor() as cursor:
            with pytest.raises(errors.InsufficientPrivilege):
                cursor.execute("CREATE TABLE shop.sneaky (id int)")
            with pytest.raises(errors.InsufficientPrivilege):
                cursor.execute("INSERT INTO shop.product VALUES (2, 'x')")
            with pytest.raises(errors.InsufficientPrivilege):
                cursor.execute("CREATE TABLE public.sneaky (id int)")
            cursor.execute("CREATE TABLE own (id int)")  # its own schema is fine
    finally:
        shop.close()
        reports.close()


def test_reader_role_only_selects_even_tables_created_later(admin_url: str, database: str) -> None:
    shop = connect(admin_url, database, "shop")
    reader = connect(admin_url, database, "reports_reader")
    try:
        with shop.cursor() as cursor:
            cursor.execute("CREATE TABLE later (id int)")
            cursor.execute("INSERT INTO later VALUES (7)")
        with reader.cursor() as cursor:
            cursor.execute("SELECT id FROM shop.later")
            assert cursor.fetchall() == [(7,)]
            with pytest.raises(errors.ReadOnlySqlTransaction):
                cursor.execute("UPDATE shop.later SET id = 8")
            cursor.execute("SET default_transaction_read_only = off")
            with pytest.raises(errors.InsufficientPrivilege):
                cursor.execute("UPDATE shop.later SET id = 8")
    finally:
        shop.close()
        reader.close()


def test_cluster_script_takes_passwords_from_the_environment() -> None:
    """The Job's psql script (k8s/db-bootstrap) is these statements; passwords never appear in it."""
    script = psql_script(FLEET)
    assert 'CREATE SCHEMA IF NOT EXISTS "shop" AUTHORIZATION "shop";' in script
    assert "\\getenv reports_reader_password ROLE_PASSWORD_REPORTS_READER\n" in script
    assert "PASSWORD :'reports_reader_password';" in script
    assert 'GRANT CONNECT ON DATABASE :"DBNAME" TO "shop";' in script
    assert "local-dev" not in script
