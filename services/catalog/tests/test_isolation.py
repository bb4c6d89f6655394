"""catalog's role owns its schema and nothing else."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from psycopg2 import errors

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE orders.intruder (id int)",
        "INSERT INTO orders.shop_order (id) VALUES ('00000000-0000-0000-0000-000000000000')",
        "SELECT * FROM identity.accounts_user",
        "CREATE TABLE public.intruder (id int)",
    ],
)
def test_catalog_role_cannot_touch_other_schemas(statement: str) -> None:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert isinstance(caught.value.__cause__, errors.InsufficientPrivilege), repr(caught.value.__cause__)


def test_catalog_tables_live_in_catalogs_schema() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'products_product'")
        assert cursor.fetchall() == [("catalog",)]
