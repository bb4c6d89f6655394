from django.http import HttpRequest, JsonResponse
from django.urls import path
from ninja import NinjaAPI

from meshauth.django.decorators import login_required, service_required
from meshauth.django.ninja import MeshAuth


def whoami(request: HttpRequest) -> JsonResponse:
    principal = request.principal  # type: ignore[attr-defined]
    identity_meta = sorted(k for k in request.META if "MESH" in k or "USER" in k)
    return JsonResponse(
        {
            "kind": principal.kind if principal else None,
            "subject": principal.subject if principal else None,
            "identity_meta": identity_meta,
        }
    )


@login_required
def account(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"subject": request.principal.subject})  # type: ignore[attr-defined]


@login_required(scopes=["orders:write"])
def place_order(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"subject": request.principal.subject})  # type: ignore[attr-defined]


@login_required(profile=True)
def profile(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"profile": request.profile})  # type: ignore[attr-defined]


@login_required
async def async_account(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"subject": request.principal.subject})  # type: ignore[attr-defined]


@service_required(scopes=["catalog:reserve"])
def reserve(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"client": request.principal.client_id})  # type: ignore[attr-defined]


@service_required(audience="orders-internal")
def internal(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


api = NinjaAPI(urls_namespace="meshauth-tests")


@api.get("/me", auth=MeshAuth())
def api_me(request: HttpRequest) -> dict[str, str]:
    return {"subject": request.auth.subject}  # type: ignore[attr-defined]


@api.post("/orders", auth=MeshAuth(scopes=["orders:write"]))
def api_orders(request: HttpRequest) -> dict[str, str]:
    return {"subject": request.auth.subject}  # type: ignore[attr-defined]


@api.post("/reservations", auth=MeshAuth(kind="service"))
def api_reserve(request: HttpRequest) -> dict[str, str]:
    return {"client": request.auth.client_id}  # type: ignore[attr-defined]


urlpatterns = [
    path("whoami", whoami),
    path("account", account),
    path("async-account", async_account),
    path("orders", place_order),
    path("profile", profile),
    path("reserve", reserve),
    path("internal", internal),
    path("api/v1/", api.urls),
]
