"""Answer the endpoints kubelet and Prometheus call, ahead of every other middleware; keep the
internal ones off the public port.

They run first so that host validation (`ALLOWED_HOSTS`) never sees them: kubelet and the scraper
address the pod by IP, which no sane `ALLOWED_HOSTS` lists.

With ``METRICS_BIND`` set (the charts and `make up` set it), gunicorn listens on a second, internal
port. There, and only there, `/metrics` is served; the Django admin is served there too, and on the
public port only when ``DJANGO_ADMIN_PUBLIC`` says so. The internal port serves nothing else. The
Ingress and the Service's public port never reach it: metrics and the admin are not public.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from meshcontract import LIVEZ, METRICS, READYZ, is_probe
from meshkit.env import setting
from meshkit.errors import json_error
from meshkit.health import run_readiness
from meshkit.metrics import metrics_response

__all__ = ["ADMIN_PREFIXES", "PROBE_PATHS", "ProbeMiddleware", "metrics_port"]

# The contract's probes (matched by its exact rule) and the scrape path.
PROBE_PATHS = (LIVEZ, READYZ, METRICS)
# The admin and the static files its pages load.
ADMIN_PREFIXES = ("/admin/", "/static/")


def metrics_port() -> str:
    """The internal port from ``METRICS_BIND`` (``host:port``), or "" when there is none."""
    bind: str = setting("METRICS_BIND")
    return bind.rpartition(":")[2] if bind else ""


class ProbeMiddleware:
    """Serve `/livez`, `/readyz` (any port) and `/metrics` (the internal port) whatever the Host says."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.internal_port = metrics_port()
        # Locally (`make up`, tests) the admin stays where a developer expects it.
        self.admin_public = setting("DJANGO_ADMIN_PUBLIC")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if self.internal_port:
            # gunicorn sets SERVER_PORT from the listening socket, never from the client's Host.
            internal = request.META.get("SERVER_PORT") == self.internal_port
            if internal and path not in PROBE_PATHS and not path.startswith(ADMIN_PREFIXES):
                return json_error(404, "Not found.")
            if not internal and path == METRICS:
                return json_error(404, "Not found.")
            if not internal and not self.admin_public and path.startswith(ADMIN_PREFIXES[0]):
                return json_error(404, "Not found.")
        elif not self.admin_public and path.startswith(ADMIN_PREFIXES[0]):
            return json_error(404, "Not found.")
        if not (is_probe(path) or path == METRICS) or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        if path == LIVEZ:
            return JsonResponse({"status": "ok"})
        if path == READYZ:
            checks = run_readiness()
            ready = all(result == "ok" for result in checks.values())
            return JsonResponse(
                {"status": "ok" if ready else "unavailable", "checks": checks},
                status=200 if ready else 503,
            )
        return metrics_response()
