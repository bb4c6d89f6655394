"""Settings of the orders service: meshkit's shared settings plus what orders owns.

Two databases: ``default`` is orders' own schema; ``catalog`` is a read-only role limited to
SELECT on catalog's schema, used only by the unmanaged models in ``orders.catalogread``.
"""

from meshkit.env import local_dev, setting
from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, service_apps, service_middleware

ROOT_URLCONF = "orders.urls"
WSGI_APPLICATION = "orders.wsgi.application"
INSTALLED_APPS = service_apps("orders.shop", "orders.catalogread")
MIDDLEWARE = service_middleware("meshauth.django.middleware.MeshAuthMiddleware")
DATABASES = {
    "default": database_config(schema="orders"),
    "catalog": database_config(schema="catalog", url_variable="CATALOG_READ_DATABASE_URL"),
}
DATABASE_ROUTERS = ["orders.routers.CatalogReadRouter"]

# Where catalog's API answers: its Service inside a cluster, its `make up` sidecar on a laptop.
ORDERS_CATALOG_URL = setting(
    "CATALOG_URL", fallback="http://127.0.0.1:8002" if local_dev() else "http://catalog:8000"
).rstrip("/")
# Seconds one call to catalog may take; an order waits for at most a few of them.
ORDERS_CATALOG_TIMEOUT = setting("CATALOG_TIMEOUT")
