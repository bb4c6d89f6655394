"""Settings of the catalog service: meshkit's shared settings plus what catalog owns."""

from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, service_apps, service_middleware

ROOT_URLCONF = "catalog.urls"
WSGI_APPLICATION = "catalog.wsgi.application"
INSTALLED_APPS = service_apps("catalog.products")
MIDDLEWARE = service_middleware("meshauth.django.middleware.MeshAuthMiddleware")
DATABASES = {"default": database_config(schema="catalog")}
