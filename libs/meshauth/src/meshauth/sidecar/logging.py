"""JSON-lines logging for the sidecar, and a cheap access log that leaves out probes and scrapes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from time import time as wallclock
from urllib.parse import unquote

from meshcontract import is_probe

__all__ = ["ACCESS_LINES", "AccessLogger", "JsonFormatter", "LineBatch", "configure_logging"]


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


class AccessLogger:
    """One JSON line per request, except ``/livez`` and ``/readyz``.

    The lines have the :class:`JsonFormatter` shape plus the request's fields, but are built
    directly (no ``LogRecord``, one cached timestamp per second) and written in batches by
    :data:`ACCESS_LINES`: on a busy sidecar, a ``write`` per request and the logging machinery
    cost more than verifying the token. Lines reach stdout at most :data:`FLUSH_SECONDS` late.
    ``LOG_LEVEL=WARNING`` (or higher) turns the access log off.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._name = _json_str(logger.name)

    @property
    def enabled(self) -> bool:
        """False at ``LOG_LEVEL=WARNING`` and above: the server then skips :meth:`log` entirely."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(
        self,
        method: str,
        target: str,
        status: int,
        request_id: str,
        seconds: float,
        remote_addr: str,
        user_agent: str | None,
    ) -> None:
        """Add the line for a request (``target`` as sent) answered with ``status`` after ``seconds``.

        ``remote_addr`` is the peer that sent it and ``user_agent`` its header: the fields gunicorn's
        access line has, so the sidecar's can stand for it (the charts turn gunicorn's off).
        """
        raw_path = target.partition("?")[0]
        path = unquote(raw_path, errors="surrogateescape") if "%" in raw_path else raw_path
        # Probes every few seconds would bury the requests that matter (scrapes go to the metrics
        # listener, which has no access log). The contract's exact rule: ``/livezX/../x`` is logged.
        if is_probe(path) and target.startswith(path):
            return
        quoted_path = _json_str(path)
        message = _json_str(f"{method} {path} {status}")
        method, request_id = _json_str(method), _json_str(request_id)
        agent = "null" if user_agent is None else _json_str(user_agent)
        ACCESS_LINES.add(
            # json.dumps' own separators: the same text as JsonFormatter would write.
            f'{{"time": "{_now()}", "level": "INFO", "logger": {self._name}, '
            f'"message": {message}, "method": {method}, "path": {quoted_path}, "status": {status}, '
            f'"duration_ms": {round(seconds * 1000, 2)}, "request_id": {request_id}, '
            f'"remote_addr": {_json_str(remote_addr)}, "user_agent": {agent}}}\n'
        )


#: How late an access line may reach stdout.
FLUSH_SECONDS = 0.2
_FLUSH_BYTES = 65_536
_json_str: Callable[[str], str] = encode_basestring_ascii  # the C encoder json.dumps uses
_clock: list[object] = [0, ""]


def _now() -> str:
    # strftime per request is measurable; the log's resolution is one second anyway.
    second = int(wallclock())
    if _clock[0] != second:
        _clock[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
    return str(_clock[1])


class LineBatch:
    """Lines written to stdout in one ``write``, at most :data:`FLUSH_SECONDS` after the first."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop: nothing would ever flush later
                self.flush()

    def flush(self) -> None:
        """Write every pending line now (also called at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            try:
                sys.stdout.write("".join(lines))
                sys.stdout.flush()
            except (OSError, ValueError):  # stdout closed: losing access lines must not fail requests
                pass


#: The sidecar's access lines waiting to be written.
ACCESS_LINES = LineBatch()


def configure_logging() -> None:
    """JSON lines on stdout at ``LOG_LEVEL`` (default INFO)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
