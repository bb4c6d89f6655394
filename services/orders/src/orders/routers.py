"""Send the read-only catalog models to the ``catalog`` alias, and nothing else there.

The ``catalog`` alias connects as ``orders_reader``, which PostgreSQL already limits to SELECT;
refusing writes here turns a mistaken ``save()`` into a clear error before any SQL is sent, and
keeps ``migrate`` from ever touching catalog's tables (catalog owns and migrates them).
"""

from __future__ import annotations

from typing import Any

from django.db import models

CATALOG_ALIAS = "catalog"
CATALOG_APP = "catalogread"


class ReadOnlyModelError(RuntimeError):
    """A write was attempted on a model that maps another service's table."""


class CatalogReadRouter:
    def db_for_read(self, model: type[models.Model], **hints: Any) -> str | None:
        return CATALOG_ALIAS if model._meta.app_label == CATALOG_APP else None

    def db_for_write(self, model: type[models.Model], **hints: Any) -> str | None:
        if model._meta.app_label == CATALOG_APP:
            raise ReadOnlyModelError(f"{model.__name__} maps catalog's table and is read-only.")
        return None

    def allow_relation(self, obj1: models.Model, obj2: models.Model, **hints: Any) -> bool | None:
        # No foreign keys across schemas: a relation is allowed only within one side.
        first, second = (obj._meta.app_label == CATALOG_APP for obj in (obj1, obj2))
        return first == second

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if db == CATALOG_ALIAS or app_label == CATALOG_APP:
            return False
        return None
