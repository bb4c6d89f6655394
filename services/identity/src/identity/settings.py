"""Settings of the identity service: meshkit's shared settings plus what identity owns."""

from meshkit.env import REQUIRED
from meshkit.settings import *  # noqa: F403
from meshkit.settings import LOCAL_DEV, database_config, get_env, service_apps, service_middleware

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
MESHAUTH_ISSUER = get_env("MESHAUTH_ISSUER", "http://127.0.0.1:8001" if LOCAL_DEV else REQUIRED)
# identity verifies its own tokens (profile, introspection) like every other service does.
MESHAUTH_AUDIENCE = get_env("MESHAUTH_AUDIENCE", "identity,mesh")
# Its keys come from its own database, not from an HTTP call to itself.
MESHAUTH_JWKS_LOADER = "identity.tokens.keys.jwks"
# A local read is cheap: pick up a rotated key within a second rather than the HTTP default of 30.
MESHAUTH_JWKS_MIN_REFRESH_INTERVAL = 1.0
IDENTITY_ACCESS_TOKEN_TTL = get_env("IDENTITY_ACCESS_TOKEN_TTL", 600, cast=int)
IDENTITY_SERVICE_TOKEN_TTL = get_env("IDENTITY_SERVICE_TOKEN_TTL", 600, cast=int)
IDENTITY_REFRESH_TOKEN_TTL = get_env("IDENTITY_REFRESH_TOKEN_TTL", 14 * 24 * 3600, cast=int)
# End users' tokens are for the whole mesh; service tokens name one service (see tokens.issuing).
IDENTITY_USER_AUDIENCE = get_env("IDENTITY_USER_AUDIENCE", "mesh")
IDENTITY_SIGNING_ALGORITHM = get_env("IDENTITY_SIGNING_ALGORITHM", "RS256")
IDENTITY_KEY_ENCRYPTION_KEY = get_env("IDENTITY_KEY_ENCRYPTION_KEY", "")
# A rotated key is published this long before it signs: twice meshauth's JWKS refresh interval.
IDENTITY_KEY_ACTIVATION_DELAY = get_env("IDENTITY_KEY_ACTIVATION_DELAY", 60, cast=int)

# Failed logins: per account, and per client address with a larger budget (database-backed).
IDENTITY_LOGIN_WINDOW = get_env("IDENTITY_LOGIN_WINDOW", 15 * 60, cast=int)
IDENTITY_LOGIN_ACCOUNT_ATTEMPTS = get_env("IDENTITY_LOGIN_ACCOUNT_ATTEMPTS", 5, cast=int)
IDENTITY_LOGIN_ADDRESS_ATTEMPTS = get_env("IDENTITY_LOGIN_ADDRESS_ATTEMPTS", 50, cast=int)
# X-Forwarded-For entries appended by proxies we run: 1 behind the sidecar, +1 per ingress hop.
IDENTITY_TRUSTED_PROXY_HOPS = get_env(
    "IDENTITY_TRUSTED_PROXY_HOPS", 1 if get_env("MESHAUTH_MODE", "inprocess") == "sidecar" else 0, cast=int
)
