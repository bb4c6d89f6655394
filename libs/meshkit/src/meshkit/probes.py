"""Answer the endpoints kubelet and Prometheus call, ahead of every other middleware.

They run first so that host validation (`ALLOWED_HOSTS`) never sees them: kubelet and the scraper
address the pod by IP, which no sane `ALLOWED_HOSTS` lists. Nothing else is served here.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from meshkit.health import run_readiness
from meshkit.metrics import metrics_response

__all__ = ["PROBE_PATHS", "ProbeMiddleware"]

LIVEZ = "/livez"
READYZ = "/readyz"
METRICS = "/metrics"
PROBE_PATHS = (LIVEZ, READYZ, METRICS)


class ProbeMiddleware:
    """Serve `/livez`, `/readyz` and `/metrics` for GET/HEAD whatever the Host header says."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path not in PROBE_PATHS or request.method not in ("GET", "HEAD"):
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
