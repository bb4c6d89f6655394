"""orders' JSON API, mounted at ``/api/v1/``."""

from django.http import HttpRequest, HttpResponse

from meshkit.api import create_api
from orders.shop.api import router as shop_router
from orders.shop.placing import OrderFailed

api = create_api(
    title="orders",
    description="Customers' orders. Stock is reserved at catalog; an order that fails holds no stock.",
)
api.add_router("/", shop_router)


@api.exception_handler(OrderFailed)
def on_order_failed(request: HttpRequest, exc: OrderFailed) -> HttpResponse:
    response = api.create_response(request, exc.body(), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response
