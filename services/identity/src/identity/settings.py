"""Settings of the identity service: meshkit's shared settings plus what identity owns."""

from meshkit.settings import *  # noqa: F403
from meshkit.settings import database_config, get_env, service_apps, service_middleware

ROOT_URLCONF = "identity.urls"
WSGI_APPLICATION = "identity.wsgi.application"
INSTALLED_APPS = service_apps("identity.accounts")
MIDDLEWARE = service_middleware()
DATABASES = {"default": database_config(schema="identity")}
AUTH_USER_MODEL = "accounts.User"

# Argon2 first: memory-hard, Django's recommendation; PBKDF2 still verifies older hashes.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

IDENTITY_ACCESS_TOKEN_TTL = get_env("IDENTITY_ACCESS_TOKEN_TTL", 600, cast=int)
IDENTITY_REFRESH_TOKEN_TTL = get_env("IDENTITY_REFRESH_TOKEN_TTL", 14 * 24 * 3600, cast=int)
