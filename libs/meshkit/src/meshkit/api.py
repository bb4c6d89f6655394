"""A django-ninja API with the mesh's error contract: JSON ``{"detail": ...}``, never an HTML page.

Validation problems are the client's: 400 with the failing fields (ninja's default is 422, which
clients of the mesh read as "unprocessable business rule", e.g. an Idempotency-Key reused with a
different body). Every 400 has the same shape, ``{"detail": ..., "errors": {field: [message]}}``.

The OpenAPI document names every status an operation can answer, including the ones the platform
adds to any view (the input guard's 400, a rejected token's 401, the sidecar's request limits: 408,
413, 414, 431, the database or the app being down: 503), so a client generated from it expects what
it will get.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from pydantic import model_validator

__all__ = ["InvalidInput", "MeshAPI", "PartialUpdate", "create_api", "field_errors"]

_DETAIL: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_INVALID: dict[str, Any] = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Messages by field (``items.0.sku``); empty when no one field is at fault.",
        },
    },
    "required": ["detail", "errors"],
}
# What any operation may answer, whatever its view does (see the module docstring).
_PLATFORM_RESPONSES: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("Invalid request: the fields at fault and why.", _INVALID),
    "401": ("A missing, malformed, expired or otherwise rejected bearer token.", _DETAIL),
    "408": ("The request body arrived too slowly (the sidecar buffers bodies with a deadline).", _DETAIL),
    "413": ("The request body is larger than the service accepts.", _DETAIL),
    "414": ("The URL is longer than the service accepts.", _DETAIL),
    "431": ("The request headers are larger or more numerous than the service accepts.", _DETAIL),
    "503": ("A dependency (the database, the app behind the sidecar) is unavailable; retry.", _DETAIL),
}
_AUTHENTICATED_RESPONSES: dict[str, tuple[str, dict[str, Any]]] = {
    "403": ("The token is valid but may not do this (wrong kind, scope or client).", _DETAIL),
}


class InvalidInput(HttpError):
    """A 400 naming the fields at fault: ``{"detail": ..., "errors": {field: [message]}}``."""

    def __init__(self, detail: str, errors: dict[str, list[str]]) -> None:
        super().__init__(400, detail)
        self.errors = errors


class PartialUpdate(Schema):
    """Base of PATCH bodies: every field may be left out, but the body is still a JSON object.

    With every field optional, a JSON array, string or number would otherwise pass as "no change".
    """

    @model_validator(mode="before")
    @classmethod
    def _object_only(cls, data: Any) -> Any:
        # ninja hands validators its DjangoGetter wrapper; the parsed body is inside.
        if not isinstance(getattr(data, "_obj", data), dict):
            raise ValueError("the body must be a JSON object")
        return data


class MeshAPI(NinjaAPI):
    """A NinjaAPI whose OpenAPI document lists the platform's answers on every operation."""

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        for operations in schema["paths"].values():
            for operation in operations.values():
                # ninja keys responses by int, JSON by string: one key per status, the view's first.
                responses = {str(k): v for k, v in operation.get("responses", {}).items()}
                extra = dict(_PLATFORM_RESPONSES)
                if operation.get("security"):
                    extra.update(_AUTHENTICATED_RESPONSES)
                for status, (description, body) in extra.items():
                    responses.setdefault(
                        status,
                        {"description": description, "content": {"application/json": {"schema": body}}},
                    )
                operation["responses"] = dict(sorted(responses.items()))
        return schema


def field_errors(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Group pydantic-style errors by field name: ``{"email": ["Enter a valid email address."]}``."""
    grouped: dict[str, list[str]] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload")]
        field = ".".join(location) or "body"
        message = str(error.get("msg", "Invalid value."))
        grouped.setdefault(field, []).append(message)
    return grouped


def create_api(title: str, description: str = "", **kwargs: Any) -> MeshAPI:
    """A NinjaAPI for ``/api/v1/`` with OpenAPI at ``openapi.json`` and docs at ``docs``."""
    api = MeshAPI(
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
        body: dict[str, Any] = {"detail": str(exc)}
        if exc.status_code == 400:
            # One shape for every 400 (ninja's own, e.g. an unparsable body, names no field).
            body["errors"] = exc.errors if isinstance(exc, InvalidInput) else {}
        return api.create_response(request, body, status=exc.status_code)

    @api.exception_handler(AuthenticationError)
    def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = api.create_response(request, {"detail": "Authentication required."}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(Http404)
    def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return api.create_response(request, {"detail": str(exc) or "Not found."}, status=404)

    return api
