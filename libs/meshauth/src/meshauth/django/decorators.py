"""View decorators: ``login_required`` for end users, ``service_required`` for services.

They rely on ``MeshAuthMiddleware`` having set ``request.principal``; an invalid token never gets
here (the middleware answered 401). Answers: no principal -> 401; wrong kind of principal -> 403;
a missing scope -> 403 with ``WWW-Authenticate: Bearer error="insufficient_scope"``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, overload

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from meshauth.django.conf import get_settings
from meshauth.django.profile import ProfileUnavailable, fetch_profile
from meshauth.django.responses import Denial, forbidden, unauthenticated
from meshauth.metrics import default_metrics
from meshauth.principal import Principal

__all__ = ["authorize", "login_required", "service_required"]

V = TypeVar("V", bound=Callable[..., Any])


def authorize(
    request: HttpRequest,
    kind: Literal["user", "service"],
    scopes: Iterable[str] = (),
    audience: str | None = None,
) -> Denial | None:
    """None when ``request.principal`` is a ``kind`` with every scope (and ``audience``), else the denial."""
    if not hasattr(request, "principal"):
        raise ImproperlyConfigured("Add meshauth.django.middleware.MeshAuthMiddleware to MIDDLEWARE.")
    principal: Principal | None = request.principal
    needed = tuple(scopes)
    denial: Denial | None = None
    if principal is None:
        denial = unauthenticated()
    elif principal.kind != kind:
        denial = forbidden(f"{kind}_required", f"This endpoint is for {kind} tokens only.")
    elif audience is not None and audience not in principal.audiences:
        denial = forbidden("wrong_audience", "The token is not meant for this endpoint.")
    elif not principal.has_scopes(*needed):
        denial = forbidden("insufficient_scope", "The token lacks a required scope.", needed)
    if denial is not None:
        result = "unauthenticated" if denial.status == 401 else "forbidden"
        default_metrics().decision(result, denial.reason, get_settings().mode)
    return denial


def _attach_profile(request: HttpRequest) -> Denial | None:
    token: str | None = getattr(request, "auth_token", None)
    if not token:
        return Denial(401, "missing", "The profile needs the caller's token.", challenge="Bearer")
    try:
        request.profile = fetch_profile(token)  # type: ignore[attr-defined]
    except ProfileUnavailable as exc:
        if exc.status == 401:
            return Denial(401, "profile_rejected", exc.detail, challenge='Bearer error="invalid_token"')
        return Denial(exc.status, "profile_unavailable", exc.detail, retry_after=5)
    return None


def _guard(
    view: V,
    kind: Literal["user", "service"],
    scopes: tuple[str, ...],
    audience: str | None,
    profile: bool,
) -> V:
    def check(request: HttpRequest) -> Denial | None:
        denial = authorize(request, kind, scopes, audience)
        if denial is None and profile:
            denial = _attach_profile(request)
        return denial

    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # Profile lookups do blocking I/O: keep them off the event loop.
            denial = await sync_to_async(check)(request) if profile else check(request)
            if denial is not None:
                return denial.response()
            return await view(request, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        denial = check(request)
        if denial is not None:
            return denial.response()
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@overload
def login_required(view: V, /) -> V: ...
@overload
def login_required(*, profile: bool = False, scopes: Iterable[str] = ()) -> Callable[[V], V]: ...


def login_required(
    view: V | None = None, /, *, profile: bool = False, scopes: Iterable[str] = ()
) -> V | Callable[[V], V]:
    """Only end users (``token_use: access``) with every one of ``scopes``.

    ``profile=True`` also fetches the caller's profile from identity (cached briefly) into
    ``request.profile``; identity rejecting the token gives 401, identity down gives 503.
    Use bare (``@login_required``) or called (``@login_required(scopes=["orders:write"])``).
    """
    needed = tuple(scopes)

    def decorate(func: V) -> V:
        return _guard(func, "user", needed, None, profile)

    return decorate(view) if view is not None else decorate


@overload
def service_required(view: V, /) -> V: ...
@overload
def service_required(*, audience: str | None = None, scopes: Iterable[str] = ()) -> Callable[[V], V]: ...


def service_required(
    view: V | None = None, /, *, audience: str | None = None, scopes: Iterable[str] = ()
) -> V | Callable[[V], V]:
    """Only services (``token_use: service``) with every one of ``scopes``.

    ``audience`` additionally requires that name in the token's ``aud`` (the middleware already
    required one of ``MESHAUTH_AUDIENCE``).
    """
    needed = tuple(scopes)

    def decorate(func: V) -> V:
        return _guard(func, "service", needed, audience, False)

    return decorate(view) if view is not None else decorate
