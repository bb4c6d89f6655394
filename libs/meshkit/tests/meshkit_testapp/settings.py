"""A minimal service built only from meshkit, to test the kit the way services use it."""

from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, service_apps, service_middleware

ROOT_URLCONF = "meshkit_testapp.urls"
WSGI_APPLICATION = "meshkit_testapp.wsgi.application"
INSTALLED_APPS = service_apps("meshkit_testapp")
MIDDLEWARE = service_middleware()
DATABASES = {"default": database_config(schema="meshkit_testapp")}
