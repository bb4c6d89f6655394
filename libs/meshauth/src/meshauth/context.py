"""The request being served, as seen by outbound calls: its id, caller and bearer token.

Set by the Django middleware for the duration of a request (context variables: per thread and per
asyncio task), read by :class:`meshauth.client.ServiceClient` to propagate ``X-Request-ID`` and,
when asked, the end user's token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from meshauth.principal import Principal

__all__ = ["RequestContext", "current", "request_context"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What outbound calls may need to know about the inbound request."""

    request_id: str | None = None
    principal: Principal | None = None
    token: str | None = None


_EMPTY = RequestContext()
_current: ContextVar[RequestContext] = ContextVar("meshauth_request", default=_EMPTY)


def current() -> RequestContext:
    """The context of the request being served (empty outside a request)."""
    return _current.get()


@contextmanager
def request_context(
    request_id: str | None, principal: Principal | None, token: str | None
) -> Iterator[RequestContext]:
    """Make ``request_id``, ``principal`` and ``token`` the current request's for the block."""
    ctx = RequestContext(request_id=request_id, principal=principal, token=token)
    reset = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(reset)
