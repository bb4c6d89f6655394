"""The sidecar's HTTP/1.1 server: aiohttp's, with requests it cannot parse answered in JSON.

aiohttp answers a request its parser refuses (a bad request line, too many headers, a line over
the limit) with ``text/plain`` and logs a traceback at ERROR. Those are a client's mistakes or an
attacker's probes: they get the mesh's JSON error contract, with a status that says which limit was
hit (414 for the request line, 431 for headers), and one WARNING line without a traceback.
A failure of the sidecar itself still gets its traceback.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, InvalidURLError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from meshcontract import REQUEST_ID_HEADER

__all__ = ["SidecarServer", "error_response"]

log = logging.getLogger("meshauth.sidecar")

_TOO_MANY_HEADERS: Final = "Too many headers"


def error_response(
    status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The ``{"detail", "reason"}`` JSON body every refusal of the sidecar has."""
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


class _Protocol(RequestHandler):
    """One connection. Only the error path differs from aiohttp's."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is out: nothing sensible can follow on this connection.
            raise ConnectionError("response already started")
        if isinstance(exc, HttpProcessingError):
            status, reason, detail = self._classify(exc)
            log.warning("malformed request from %s: %s (%s)", request.remote, reason, _one_line(exc))
        elif status == 504:
            reason, detail = "timeout", "The request took too long."
        else:
            log.error("error handling request from %s", request.remote, exc_info=exc)
            status, reason, detail = 500, "internal_error", "The proxy failed; this is a bug."
        # The request was never parsed, so it has no request ID of its own: a fresh one, as for any answer.
        response = error_response(status, reason, detail, {REQUEST_ID_HEADER: uuid.uuid4().hex})
        response.force_close()
        return response

    def _classify(self, exc: HttpProcessingError) -> tuple[int, str, str]:
        if isinstance(exc, LineTooLong):
            # The request line is parsed with max_line_size, header fields with max_field_size;
            # the two differ (see create_server), so the limit says which one overflowed.
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size:
                return 414, "uri_too_long", "The request target is too long."
            return 431, "headers_too_large", "Request headers are too large."
        if isinstance(exc, InvalidURLError):
            return 400, "bad_request_target", "The request target must be a path starting with one '/'."
        if isinstance(exc, BadHttpMessage) and _TOO_MANY_HEADERS in str(exc.message):
            return 431, "too_many_headers", f"Send at most {self.max_headers} header fields."
        return 400, "malformed_request", "The request is not valid HTTP/1.1."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class SidecarServer(web.Server):
    """``aiohttp.web.Server`` whose connections answer parse errors in JSON."""

    def __call__(self) -> RequestHandler:
        # aiohttp's own factory, with the subclass: same arguments, same lifecycle.
        kwargs: dict[str, Any] = self._kwargs
        return _Protocol(self, loop=self._loop, **kwargs)
