"""The URLconf every service shares: the admin, the API under ``/api/v1/``, and JSON error handlers.

A service's ``urls.py`` is::

    from meshkit.urls import *  # noqa: F403 - the JSON error handlers
    from meshkit.urls import service_urlpatterns

    urlpatterns = service_urlpatterns("catalog.api.api")

The probes and ``/metrics`` need no URL: :class:`meshkit.probes.ProbeMiddleware` answers them ahead
of routing (and of host validation).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path
from django.utils.module_loading import import_string
from ninja import NinjaAPI

__all__ = ["API_PREFIX", "handler400", "handler403", "handler404", "handler500", "service_urlpatterns"]

#: Where every service's API lives (its OpenAPI document and docs page too).
API_PREFIX = "api/v1/"

# Django looks these up in the root URLconf: errors are JSON like the API's, never an HTML page.
handler400 = "meshkit.errors.handler400"
handler403 = "meshkit.errors.handler403"
handler404 = "meshkit.errors.handler404"
handler500 = "meshkit.errors.handler500"


def service_urlpatterns(
    api: NinjaAPI | str, *extra: URLPattern | URLResolver
) -> list[URLPattern | URLResolver]:
    """The admin and ``api`` (or its dotted path, as ``create_api`` takes routers) under
    :data:`API_PREFIX`, after ``extra`` (first, so that a service may replace one of the admin's
    views, as identity does its login)."""
    ninja = import_string(api) if isinstance(api, str) else api
    return [*extra, path("admin/", admin.site.urls), path(API_PREFIX, ninja.urls)]
