"""Settings of the catalog service: meshkit's shared settings plus what catalog owns."""

from meshkit.env import setting
from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, service_apps, service_middleware

ROOT_URLCONF = "catalog.urls"
WSGI_APPLICATION = "catalog.wsgi.application"
INSTALLED_APPS = service_apps("catalog.products")
MIDDLEWARE = service_middleware("meshauth.django.middleware.MeshAuthMiddleware")
DATABASES = {"default": database_config(schema="catalog")}

# How long a reservation holds stock before catalog takes it back, unless committed or released:
# the bound on stock held by a caller that died mid-order. Longer than any live order attempt.
CATALOG_RESERVATION_TTL = setting("CATALOG_RESERVATION_TTL")
