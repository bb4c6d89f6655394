"""The sidecar's own metrics, in their own registry, served at ``/metrics/sidecar``.

A separate registry (and the ``meshauth_sidecar_`` prefix) keeps them apart from the app's
``/metrics``: nothing is counted twice, whatever Prometheus scrapes.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from meshauth.metrics import DURATION_BUCKETS, AuthMetrics

__all__ = ["PREFIX", "SidecarMetrics"]

PREFIX: Final = "meshauth_sidecar"


class SidecarMetrics:
    """Request durations, in-flight requests, upstream errors and the auth metrics of the sidecar."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.auth = AuthMetrics(prefix=PREFIX, registry=self.registry, with_mode=False)
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Duration of requests through the sidecar, upstream time included.",
            ("http_request_method", "http_response_status_code"),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._durations: dict[tuple[str, int], Histogram] = {}
        self.active_requests = Gauge(
            f"{PREFIX}_active_requests",
            "Requests in flight through the sidecar.",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors_total",
            "Requests the app could not answer (connection refused, timeout, reset).",
            ("kind",),
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            f"{PREFIX}_rejected_requests_total",
            "Requests refused before reaching the app (size, limits, request target, slow body).",
            ("reason",),
            registry=self.registry,
        )

    def observe_request(self, method: str, status: int, seconds: float) -> None:
        """One proxied request's duration (``method`` already folded to a known one or ``_OTHER``)."""
        child = self._durations.get((method, status))
        if child is None:
            # Bound once per (method, status): labels() locks and builds a key on every call.
            child = self.request_duration.labels(method, str(status))
            self._durations[(method, status)] = child
        child.observe(seconds)
