from django.apps import AppConfig


class CatalogReadConfig(AppConfig):
    """Read-only, unmanaged models of catalog's tables (served by the ``catalog`` database alias)."""

    name = "orders.catalogread"
    label = "catalogread"
    verbose_name = "Catalog (read-only)"
