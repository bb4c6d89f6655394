"""JSON answers for the errors Django would otherwise render as HTML pages."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

__all__ = [
    "BodySizeLimitMiddleware",
    "DatabaseUnavailableMiddleware",
    "JsonMethodNotAllowedMiddleware",
    "handler400",
    "handler403",
    "handler404",
    "handler500",
    "json_error",
]


def json_error(status: int, detail: str, **extra: object) -> JsonResponse:
    """A ``{"detail": ...}`` error response, the shape every API in the mesh answers with."""
    return JsonResponse({"detail": detail, **extra}, status=status)


class BodySizeLimitMiddleware:
    """Refuse bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with 413 before anything reads them.

    Django itself raises ``RequestDataTooBig`` only when a view reads the body, and answers 400;
    a client deserves to learn that the size was the problem.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            return json_error(400, "Content-Length is not a number.", errors={})
        if limit is not None and length > limit:
            return json_error(413, f"Request body is larger than {limit} bytes.")
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """Answer 503 with ``Retry-After`` when the database cannot be reached, instead of a 500.

    The request was fine; the dependency was not. A 503 tells clients and load balancers to retry
    later, and keeps the availability SLO's 5xx honest about what failed.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            response = json_error(503, "Database unavailable, retry shortly.")
            response["Retry-After"] = "5"
            return response
        return None


class JsonMethodNotAllowedMiddleware:
    """Answer a wrong method with the JSON contract (and ``Allow``) instead of the views' plain text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            answer = json_error(405, f"Method {request.method} is not allowed here.")
            answer["Allow"] = response.get("Allow", "")
            return answer
        return response


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_error(400, "Bad request.", errors={})


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_error(403, "Forbidden.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_error(404, "Not found.")


def handler500(request: HttpRequest) -> HttpResponse:
    return json_error(500, "Internal server error.")
