import json
import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from meshkit_testapp.models import Item

logger = logging.getLogger(__name__)


def items(request: HttpRequest, name: str) -> JsonResponse:
    logger.info("looking up item", extra={"item": name})
    return JsonResponse({"name": name, "exists": Item.objects.filter(name=name).exists()})


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("boom")


@csrf_exempt
def create_item(request: HttpRequest) -> JsonResponse:
    """Stores whatever name it is sent, with no validation of its own: the kit must guard it."""
    if request.content_type == "application/json":
        name = json.loads(request.body)["item"]["name"]
    else:
        name = request.POST["name"]
    item = Item.objects.create(name=name)
    return JsonResponse({"name": item.name}, status=201)
