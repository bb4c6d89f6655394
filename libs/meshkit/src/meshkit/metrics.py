"""Prometheus metrics for a Django service, correct under gunicorn with many workers.

Names and labels follow the OpenTelemetry HTTP semantic conventions (`http_server_request_duration_
seconds` with `http_request_method`, `http_route`, `http_response_status_code`). Labels stay
bounded: the route is the URL pattern, never the raw path, and unknown methods become `_OTHER`.

With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn), every worker writes its samples to that directory
and `/metrics` aggregates them; `meshkit.gunicorn` wipes the directory at start and marks exited
workers dead so counts neither reset nor multiply when workers recycle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.db import DataError, IntegrityError, connections
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from meshcontract import QUIET_PATHS

__all__ = [
    "DB_QUERIES_PER_REQUEST",
    "DB_QUERY_DURATION",
    "REQUEST_DURATION",
    "RequestMetricsMiddleware",
    "metrics_response",
]

# OpenTelemetry's recommended boundaries for HTTP server durations.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SIZE_BUCKETS = (0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# Probe and scrape traffic would dominate every rate and drown the SLO signal.
UNMEASURED_PATHS = QUIET_PATHS

HTTP_LABELS = ("http_request_method", "http_route", "http_response_status_code")

REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests.",
    HTTP_LABELS,
    buckets=DURATION_BUCKETS,
)
REQUEST_BODY_SIZE = Histogram(
    "http_server_request_body_size_bytes",
    "Size of HTTP server request bodies.",
    ("http_request_method", "http_route"),
    buckets=SIZE_BUCKETS,
)
RESPONSE_BODY_SIZE = Histogram(
    "http_server_response_body_size_bytes",
    "Size of HTTP server response bodies.",
    ("http_request_method", "http_route"),
    buckets=SIZE_BUCKETS,
)
ACTIVE_REQUESTS = Gauge(
    "http_server_active_requests",
    "HTTP server requests in flight.",
    ("http_request_method",),
    # Sum over live workers only: a dead worker's in-flight count must vanish with it.
    multiprocess_mode="livesum",
)
DB_QUERY_DURATION = Histogram(
    "db_client_operation_duration_seconds",
    "Duration of database queries.",
    ("db_alias",),
    buckets=DURATION_BUCKETS,
)
DB_QUERIES_PER_REQUEST = Histogram(
    "meshkit_db_queries_per_request",
    "Database queries issued while serving one HTTP request.",
    ("http_route",),
    buckets=(0, 1, 2, 5, 10, 20, 50, 100),
)
DB_TIME_PER_REQUEST = Histogram(
    "meshkit_db_time_per_request_seconds",
    "Total database time spent serving one HTTP request.",
    ("http_route",),
    buckets=DURATION_BUCKETS,
)
DB_ERRORS = Counter(
    "meshkit_db_errors_total",
    "Database errors: failed connections and failing statements (constraint violations excluded).",
    ("db_alias",),
)
# Errors of one statement's data, not of the database: the application handles them (losing a unique
# race to a concurrent insert is normal) and the connection stays usable, as Django itself reasons.
STATEMENT_ERRORS = (DataError, IntegrityError)


def _method(request: HttpRequest) -> str:
    method = (request.method or "").upper()
    return method if method in KNOWN_METHODS else "_OTHER"


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return UNMATCHED_ROUTE
    return "/" + str(match.route).lstrip("^").rstrip("$")


class _QueryTimer:
    """A ``connection.execute_wrapper`` that counts and times the queries of one request."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception as exc:
            if not isinstance(exc, STATEMENT_ERRORS):
                DB_ERRORS.labels(self.alias).inc()
            raise
        finally:
            elapsed = time.perf_counter() - start
            self.count += 1
            self.seconds += elapsed
            DB_QUERY_DURATION.labels(self.alias).observe(elapsed)


class RequestMetricsMiddleware:
    """Measure every request except probes and scrapes; place it right after ProbeMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        for alias in connections:
            # At 0 from the first scrape: rate() and the database alert see "no errors", not "no data".
            DB_ERRORS.labels(alias)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in UNMEASURED_PATHS:
            return self.get_response(request)
        method = _method(request)
        timers = [_QueryTimer(alias) for alias in connections]
        start = time.perf_counter()
        unconnected = _unconnected_aliases()
        ACTIVE_REQUESTS.labels(method).inc()
        try:
            response = self._serve(request, timers)
        finally:
            ACTIVE_REQUESTS.labels(method).dec()
            _count_failed_connects(unconnected)
        route = _route(request)
        REQUEST_DURATION.labels(method, route, str(response.status_code)).observe(time.perf_counter() - start)
        REQUEST_BODY_SIZE.labels(method, route).observe(len(request.body) if _body_read(request) else 0)
        if not response.streaming:
            RESPONSE_BODY_SIZE.labels(method, route).observe(len(response.content))
        DB_QUERIES_PER_REQUEST.labels(route).observe(sum(t.count for t in timers))
        DB_TIME_PER_REQUEST.labels(route).observe(sum(t.seconds for t in timers))
        return response

    def _serve(self, request: HttpRequest, timers: list[_QueryTimer]) -> HttpResponse:
        with ExitStack() as stack:
            for timer in timers:
                stack.enter_context(connections[timer.alias].execute_wrapper(timer))
            return self.get_response(request)


def _unconnected_aliases() -> list[str]:
    """Aliases without an open connection, with Django's error flag cleared.

    The flag only means something while a connection exists (``connect()`` clears it), so clearing
    it here changes nothing for Django and lets :func:`_count_failed_connects` read it afresh.
    """
    found = []
    for alias in connections:
        wrapper = connections[alias]
        if wrapper.connection is None:
            wrapper.errors_occurred = False
            found.append(alias)
    return found


def _count_failed_connects(aliases: list[str]) -> None:
    # Opening a connection fails before any execute wrapper runs, so _QueryTimer never sees it; Django
    # flags the wrapper and leaves it without a connection. Counted here, database outages page.
    for alias in aliases:
        wrapper = connections[alias]
        if wrapper.connection is None and wrapper.errors_occurred:
            DB_ERRORS.labels(alias).inc()


def _body_read(request: HttpRequest) -> bool:
    # Only measure a body the view already read: reading it here would defeat streaming uploads.
    return hasattr(request, "_body")


def metrics_registry() -> CollectorRegistry:
    """The registry `/metrics` exposes: the multiprocess aggregate under gunicorn, else the default."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def metrics_response() -> HttpResponse:
    """Prometheus text exposition of this service's metrics."""
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
