"""The request id: taken from `X-Request-ID` when it is sane, generated otherwise, echoed back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

from meshcontract import REQUEST_ID_HEADER, REQUEST_ID_META, valid_request_id

__all__ = ["HEADER", "RequestIdMiddleware", "current_request_id", "new_request_id"]

HEADER = REQUEST_ID_HEADER
_current: ContextVar[str | None] = ContextVar("meshkit_request_id", default=None)


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being served by this thread or task, if any."""
    return _current.get()


def accept_request_id(value: str | None) -> str:
    """Keep a caller's id when it is safe to log and forward, else make a new one."""
    # A client may send anything; only short, log-safe ids are propagated (the contract's rule).
    if valid_request_id(value):
        return value
    return new_request_id()


class RequestIdMiddleware:
    """Give every request an id, expose it to logs and outbound calls, and echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accept_request_id(request.headers.get(HEADER))
        request.META[REQUEST_ID_META] = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response
