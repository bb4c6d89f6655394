"""JSON-lines logging for the sidecar, and an access log that leaves out probes and scrapes."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

__all__ = ["AccessLogger", "JsonFormatter", "configure_logging"]

# Probes every few seconds would bury the requests that matter (scrapes go to the metrics listener,
# which has no access log). Exact paths: with prefixes, ``/livezX/../api/v1/orders`` would hide.
QUIET_PATHS = frozenset({"/livez", "/readyz"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line, like the app's meshkit logs."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "http", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class AccessLogger(AbstractAccessLogger):
    """One line per request, except ``/livez`` and ``/readyz``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = request.path
        if path in QUIET_PATHS and request.raw_path.startswith(path):
            return
        self.logger.info(
            "%s %s %s",
            request.method,
            path,
            response.status,
            extra={
                "http": {
                    "method": request.method,
                    "path": path,
                    "status": response.status,
                    "duration_ms": round(time * 1000, 2),
                    "request_id": response.headers.get("X-Request-ID", ""),
                }
            },
        )


def configure_logging() -> None:
    """JSON lines on stdout at ``LOG_LEVEL`` (default INFO)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
