"""Settings every service shares, built from the environment. A service's settings module stays short:

from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, service_apps, service_middleware

ROOT_URLCONF = "identity.urls"
INSTALLED_APPS = service_apps("identity.accounts")
MIDDLEWARE = service_middleware()
DATABASES = {"default": database_config(schema="identity")}
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ImproperlyConfigured

from meshkit.database import database_config
from meshkit.env import building, local_dev, setting
from meshkit.logging import logging_config

__all__ = [
    "ALLOWED_HOSTS",
    "AUTH_PASSWORD_VALIDATORS",
    "CSRF_TRUSTED_ORIGINS",
    "DATA_UPLOAD_MAX_MEMORY_SIZE",
    "DEBUG",
    "DEFAULT_AUTO_FIELD",
    "LANGUAGE_CODE",
    "LOCAL_DEV",
    "LOGGING",
    "SECRET_KEY",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SESSION_COOKIE_SECURE",
    "SILENCED_SYSTEM_CHECKS",
    "STATIC_ROOT",
    "STATIC_URL",
    "TEMPLATES",
    "TIME_ZONE",
    "WHITENOISE_USE_FINDERS",
    "USE_TZ",
    "database_config",
    "service_apps",
    "service_middleware",
]

LOCAL_DEV = local_dev()


def _secret_key() -> str:
    key = setting("SECRET_KEY", fallback=None)
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")
        return str(key)
    if LOCAL_DEV or building():
        # A throwaway key: sessions and signed values do not survive a restart, which is fine locally.
        return secrets.token_urlsafe(50)
    raise ImproperlyConfigured("Set the environment variable SECRET_KEY.")


SECRET_KEY = _secret_key()
DEBUG: bool = setting("DEBUG")
ALLOWED_HOSTS: list[str] = setting("ALLOWED_HOSTS")
if LOCAL_DEV:
    ALLOWED_HOSTS = [*ALLOWED_HOSTS, "127.0.0.1", "localhost", "[::1]", "testserver"]
CSRF_TRUSTED_ORIGINS: list[str] = setting("CSRF_TRUSTED_ORIGINS")
# TLS ends at the ingress. Whether a request came over https is gunicorn's call (`wsgi.url_scheme`):
# it reads X-Forwarded-Proto only from GUNICORN_FORWARDED_ALLOW_IPS, which is the sidecar (127.0.0.1;
# the sidecar itself passes the header on only from MESHAUTH_SIDECAR_TRUSTED_PROXIES) or, in-process,
# the ingress. No SECURE_PROXY_SSL_HEADER: with it, Django would believe whoever sent the header.
# Cookies are https-only outside local development (a browser only ever reaches us through TLS).
SESSION_COOKIE_SECURE: bool = setting("SECURE_COOKIES")
CSRF_COOKIE_SECURE: bool = SESSION_COOKIE_SECURE
# HSTS and the http -> https redirect belong to the TLS terminator (the ingress): in the cluster,
# services call each other and are probed over plain http, which a redirect would break. Django sends
# HSTS on https requests when SECURE_HSTS_SECONDS is set.
SECURE_HSTS_SECONDS: int = setting("SECURE_HSTS_SECONDS")
SILENCED_SYSTEM_CHECKS = ["security.W008"] + ([] if SECURE_HSTS_SECONDS else ["security.W004"])

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
# Set in the image, where `collectstatic` ran at build time; locally the admin's files come from
# the installed apps directly.
STATIC_ROOT: str | None = setting("STATIC_ROOT")
WHITENOISE_USE_FINDERS = LOCAL_DEV
DATA_UPLOAD_MAX_MEMORY_SIZE: int = setting("DATA_UPLOAD_MAX_MEMORY_SIZE")

LOGGING = logging_config(setting("LOG_LEVEL").upper())

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

_BASE_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "meshkit",
]


def service_apps(*apps: str) -> list[str]:
    """Django's admin stack, meshkit, then the service's own apps."""
    return [*_BASE_APPS, *apps]


def service_middleware(*extra: str) -> list[str]:
    """The middleware stack in the order that matters: probes first, metrics around everything else.

    ``extra`` (e.g. meshauth's middleware) goes after authentication so it can see the user.
    """
    return [
        "meshkit.probes.ProbeMiddleware",
        "meshkit.metrics.RequestMetricsMiddleware",
        "meshkit.requestid.RequestIdMiddleware",
        "meshkit.errors.BodySizeLimitMiddleware",
        # After the size limit: it reads the body, and only bodies within the limit.
        "meshkit.inputs.InputGuardMiddleware",
        "meshkit.errors.DatabaseUnavailableMiddleware",
        "meshkit.errors.JsonMethodNotAllowedMiddleware",
        "django.middleware.security.SecurityMiddleware",
        # The admin's static files, from the image, without a separate web server.
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        *extra,
    ]
