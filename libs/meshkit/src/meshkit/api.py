"""A django-ninja API with the mesh's error contract: JSON ``{"detail": ...}``, never an HTML page.

Validation problems are the client's: 400 with the failing fields (ninja's default is 422, which
clients of the mesh read as "unprocessable business rule", e.g. an Idempotency-Key reused with a
different body).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

__all__ = ["create_api", "field_errors"]


def field_errors(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Group pydantic-style errors by field name: ``{"email": ["Enter a valid email address."]}``."""
    grouped: dict[str, list[str]] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload")]
        field = ".".join(location) or "body"
        message = str(error.get("msg", "Invalid value."))
        grouped.setdefault(field, []).append(message)
    return grouped


def create_api(title: str, description: str = "", **kwargs: Any) -> NinjaAPI:
    """A NinjaAPI for ``/api/v1/`` with OpenAPI at ``openapi.json`` and docs at ``docs``."""
    api = NinjaAPI(
        title=title,
        version="1",
        description=description,
        openapi_url="/openapi.json",
        docs_url="/docs",
        urls_namespace=kwargs.pop("urls_namespace", "api-v1"),
        **kwargs,
    )

    @api.exception_handler(ValidationError)
    def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        return api.create_response(
            request, {"detail": "Invalid request.", "errors": field_errors(exc.errors)}, status=400
        )

    @api.exception_handler(HttpError)
    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)

    @api.exception_handler(AuthenticationError)
    def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = api.create_response(request, {"detail": "Authentication required."}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(Http404)
    def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)

    return api
