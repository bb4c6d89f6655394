"""One guard for every service's input: no NUL character reaches a view, a form or the database,
and no query parameter arrives twice.

PostgreSQL's text types cannot hold NUL (psycopg raises "A string literal cannot contain NUL" and
the client gets a 500). Refusing it per field is a promise each new field must remember; this
middleware refuses it once, for every query parameter, JSON bodies (any depth, keys and values) and
form bodies, with the API's validation contract: 400 ``{"detail", "errors"}``. A path holding NUL
names nothing: 404.

A query parameter given twice (``?page=1&page=2``) is ambiguous: the views would silently use the
last one. None of the APIs takes a list in the query, so the guard refuses repeats with 400 too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from meshkit.errors import json_error

__all__ = ["NUL_MESSAGE", "REPEATED_MESSAGE", "InputGuardMiddleware", "nul_fields", "repeated_parameters"]

NUL_MESSAGE = "must not contain NUL characters"
REPEATED_MESSAGE = "must be given once"
_FORM_TYPES = ("application/x-www-form-urlencoded",)


def _walk(value: Any, location: str) -> Iterator[str]:
    """The dotted locations (``items.0.sku``) of every string holding NUL inside a JSON value."""
    if isinstance(value, str):
        if "\x00" in value:
            yield location or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield location or "body"
                continue
            yield from _walk(item, f"{location}.{key}" if location else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{location}.{index}" if location else str(index))


def _form_fields(request: HttpRequest) -> list[str]:
    found: set[str] = set()
    for key, values in request.POST.lists():
        if "\x00" in key:
            found.add("body")
        elif any("\x00" in value for value in values):
            found.add(key)
    return sorted(found)


def _body_fields(request: HttpRequest) -> list[str]:
    content_type = request.content_type or ""
    if content_type in _FORM_TYPES or content_type.startswith("multipart/"):
        # Django parses (and caches) form bodies once; files are not text and are left alone.
        return _form_fields(request)
    body = request.body
    if b"\x00" in body:
        return ["body"]
    # JSON can only carry NUL as the escape \u0000: parse only bodies that contain one.
    if b"\\u0000" not in body:
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []  # not JSON after all; the view answers for malformed bodies
    return sorted(set(_walk(document, "")))


def nul_fields(request: HttpRequest) -> list[str]:
    """The inputs of ``request`` that hold a NUL character, named as the API names fields."""
    fields: list[str] = []
    for key, values in request.GET.lists():
        if "\x00" in key:
            fields.append("query")
        elif any("\x00" in value for value in values):
            fields.append(key)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        fields += _body_fields(request)
    return sorted(set(fields))


def repeated_parameters(request: HttpRequest) -> list[str]:
    """Query parameters given more than once."""
    return sorted(key for key, values in request.GET.lists() if len(values) > 1 and "\x00" not in key)


class InputGuardMiddleware:
    """Answer 400 with the field names when a text input holds NUL or a query parameter repeats.

    Place it after the body-size limit, so that only bodies within the limit are read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            # No route and no stored name can hold NUL: the path names nothing.
            return json_error(404, "Not found.")
        try:
            fields = nul_fields(request)
        except RequestDataTooBig:
            return json_error(413, "Request body is too large.")
        errors = {field: [NUL_MESSAGE] for field in fields}
        for field in repeated_parameters(request):
            errors.setdefault(field, []).append(REPEATED_MESSAGE)
        if errors:
            return json_error(400, "Invalid request.", errors=errors)
        return self.get_response(request)
