"""Settings of the identity service: meshkit's shared settings plus what identity owns."""

from meshkit.env import REQUIRED, setting
from meshkit.settings import *  # noqa: F403
from meshkit.settings import LOCAL_DEV, database_config, service_apps, service_middleware

ROOT_URLCONF = "identity.urls"
WSGI_APPLICATION = "identity.wsgi.application"
INSTALLED_APPS = service_apps("identity.accounts", "identity.tokens")
MIDDLEWARE = service_middleware("meshauth.django.middleware.MeshAuthMiddleware")
DATABASES = {"default": database_config(schema="identity")}
AUTH_USER_MODEL = "accounts.User"
# The only backend: every password check (API login, admin login) shares the failed-login limits.
AUTHENTICATION_BACKENDS = ["identity.accounts.backends.RateLimitedModelBackend"]

# Argon2 first: memory-hard, Django's recommendation; PBKDF2 still verifies older hashes.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

# Tokens. The issuer is the same setting every verifier reads (MESHAUTH_ISSUER).
MESHAUTH_ISSUER = setting("MESHAUTH_ISSUER", fallback="http://127.0.0.1:8001" if LOCAL_DEV else REQUIRED)
# identity verifies its own tokens (profile, introspection) like every other service does.
MESHAUTH_AUDIENCE = setting("MESHAUTH_AUDIENCE", service="identity")
# Its keys come from its own database, not from an HTTP call to itself, and a local read is cheap
# enough to see a rotated key within a second (identity's defaults in the contract).
MESHAUTH_JWKS_LOADER = setting("MESHAUTH_JWKS_LOADER", service="identity")
MESHAUTH_JWKS_MIN_REFRESH_INTERVAL = setting("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL", service="identity")
IDENTITY_ACCESS_TOKEN_TTL = setting("IDENTITY_ACCESS_TOKEN_TTL")
IDENTITY_SERVICE_TOKEN_TTL = setting("IDENTITY_SERVICE_TOKEN_TTL")
IDENTITY_REFRESH_TOKEN_TTL = setting("IDENTITY_REFRESH_TOKEN_TTL")
# End users' tokens are for the whole mesh; service tokens name one service (see tokens.issuing).
IDENTITY_USER_AUDIENCE = setting("IDENTITY_USER_AUDIENCE")
IDENTITY_SIGNING_ALGORITHM = setting("IDENTITY_SIGNING_ALGORITHM")
IDENTITY_KEY_ENCRYPTION_KEY = setting("IDENTITY_KEY_ENCRYPTION_KEY")
# A rotated key is published this long before it signs: twice meshauth's JWKS refresh interval.
IDENTITY_KEY_ACTIVATION_DELAY = setting("IDENTITY_KEY_ACTIVATION_DELAY")

# Failed logins: per account, and per client address with a larger budget (database-backed).
IDENTITY_LOGIN_WINDOW = setting("IDENTITY_LOGIN_WINDOW")
IDENTITY_LOGIN_ACCOUNT_ATTEMPTS = setting("IDENTITY_LOGIN_ACCOUNT_ATTEMPTS")
IDENTITY_LOGIN_ADDRESS_ATTEMPTS = setting("IDENTITY_LOGIN_ADDRESS_ATTEMPTS")
# X-Forwarded-For entries appended by proxies we run: 1 behind the sidecar, +1 per ingress hop.
IDENTITY_TRUSTED_PROXY_HOPS: int = setting(
    "IDENTITY_TRUSTED_PROXY_HOPS", fallback=1 if setting("MESHAUTH_MODE") == "sidecar" else 0
)
