import logging

from django.http import HttpRequest, JsonResponse

from meshkit_testapp.models import Item

logger = logging.getLogger(__name__)


def items(request: HttpRequest, name: str) -> JsonResponse:
    logger.info("looking up item", extra={"item": name})
    return JsonResponse({"name": name, "exists": Item.objects.filter(name=name).exists()})


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("boom")
