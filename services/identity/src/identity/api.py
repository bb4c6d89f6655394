"""identity's JSON API, mounted at ``/api/v1/``."""

from identity.accounts.api import router as accounts_router
from identity.accounts.profile import router as profile_router
from identity.tokens.api import router as tokens_router
from identity.tokens.introspection import router as introspection_router
from meshkit.api import create_api

api = create_api(
    title="identity",
    description="Users, login, access and refresh tokens, service credentials and profiles.",
)
api.add_router("/", accounts_router)
api.add_router("/", tokens_router)
api.add_router("/", introspection_router)
api.add_router("/", profile_router)
