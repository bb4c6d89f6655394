"""Prometheus metrics of token verification and the JWKS cache.

The app's metrics live in the default registry (so meshkit's ``/metrics`` and the gunicorn
multiprocess collector pick them up) and are created on first use, so a process that never
verifies (the sidecar) registers nothing there. The sidecar builds its own :class:`AuthMetrics` in
its own registry with the ``meshauth_sidecar`` prefix: it never double-counts the app's series.
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AuthMetrics", "client_request_duration", "default_metrics"]

DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class AuthMetrics:
    """Auth decisions, JWKS refreshes and JWKS age, under one name prefix in one registry.

    ``mode`` is set for the app's metrics (label ``mode``: ``inprocess`` or ``sidecar``) and left
    out for the sidecar's own, whose names already say where they come from.
    """

    def __init__(self, *, prefix: str, registry: CollectorRegistry, with_mode: bool) -> None:
        self.with_mode = with_mode
        self._children: dict[tuple[str, str, str], Counter] = {}
        labels = ("mode", "result", "reason") if with_mode else ("result", "reason")
        self.decisions = Counter(
            f"{prefix}_auth_decisions_total",
            "Authentication and authorization decisions.",
            labels,
            registry=registry,
        )
        self.jwks_refresh = Counter(
            f"{prefix}_jwks_refresh_total",
            "JWKS fetches by outcome.",
            ("outcome",),
            registry=registry,
        )
        self.jwks_age = Gauge(
            f"{prefix}_jwks_age_seconds",
            "Seconds since the JWKS was last fetched successfully.",
            registry=registry,
            # Under gunicorn each worker has its own cache; the stalest one is what matters.
            multiprocess_mode="livemax",
        )

    def decision(self, result: str, reason: str = "", mode: str = "inprocess") -> None:
        """Count one decision: ``result`` is accepted, anonymous, rejected or forbidden."""
        key = (mode, result, reason)
        child = self._children.get(key)
        if child is None:
            # labels() takes a lock and builds a key per call: bind each child once (results and
            # reasons are a small fixed set, so this stays small).
            child = self.decisions.labels(*key) if self.with_mode else self.decisions.labels(result, reason)
            self._children[key] = child
        child.inc()


_lock = threading.Lock()
_default: AuthMetrics | None = None
_client_duration: Histogram | None = None


def default_metrics() -> AuthMetrics:
    """The app's metrics (``meshauth_*`` in the default registry), created once."""
    global _default
    with _lock:
        if _default is None:
            _default = AuthMetrics(prefix="meshauth", registry=REGISTRY, with_mode=True)
        return _default


def client_request_duration() -> Histogram:
    """``meshauth_client_request_duration_seconds{target,outcome}`` for the service client."""
    global _client_duration
    with _lock:
        if _client_duration is None:
            _client_duration = Histogram(
                "meshauth_client_request_duration_seconds",
                "Duration of outbound service-to-service requests, retries included.",
                ("target", "outcome"),
                buckets=DURATION_BUCKETS,
            )
        return _client_duration
