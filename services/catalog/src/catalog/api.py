"""catalog's JSON API, mounted at ``/api/v1/``."""

from catalog.products.api import router as products_router
from meshkit.api import create_api

api = create_api(
    title="catalog",
    description="Products and stock. Reads are public; writes need scope catalog:write; "
    "reservations are for services holding a token with audience catalog.",
)
api.add_router("/", products_router)
