"""A database-free Django project to test meshauth's middleware, decorators and ninja auth."""

SECRET_KEY = "meshauth-tests-only-not-a-secret-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "meshauth_testproject.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["meshauth.django.middleware.MeshAuthMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Tests point these at their own identity server with the `settings` fixture.
MESHAUTH_MODE = "inprocess"
MESHAUTH_ISSUER = "http://identity.test"
MESHAUTH_AUDIENCE = "orders"
MESHAUTH_JWKS_URL = "http://127.0.0.1:9/.well-known/jwks.json"
