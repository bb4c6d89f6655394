"""orders' JSON API, mounted at ``/api/v1/``."""

from django.http import HttpRequest, HttpResponse
from ninja import Schema

from meshkit.api import create_api
from orders.shop.api import router as shop_router
from orders.shop.placing import OrderFailed

api = create_api(
    title="orders",
    description="Customers' orders. Stock is reserved at catalog; an order that fails holds no stock.",
)
api.add_router("/", shop_router)


class WhoAmI(Schema):
    authenticated: bool
    kind: str | None = None
    subject: str | None = None
    scopes: list[str] = []


@api.get("whoami", response=WhoAmI, tags=["auth"], summary="Who the mesh says is calling")
def whoami(request: HttpRequest) -> dict[str, object]:
    """No database, no business logic: the cheapest authenticated answer, which `make bench` uses to
    measure what each auth mode costs on its own."""
    principal = getattr(request, "principal", None)
    if principal is None:
        return {"authenticated": False}
    return {
        "authenticated": True,
        "kind": principal.kind,
        "subject": principal.subject,
        "scopes": sorted(principal.scopes),
    }


@api.exception_handler(OrderFailed)
def on_order_failed(request: HttpRequest, exc: OrderFailed) -> HttpResponse:
    response = api.create_response(request, exc.body(), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response
