"""The request target: the only part of the request line the sidecar passes on to its app.

The sidecar talks to one upstream, fixed at start (scheme, host, port). A request target only ever
becomes the path and query of a request to that upstream, and only in origin-form (``/path?query``,
RFC 9112 section 3.2.1). Everything else is refused before any other work:

- absolute-form (``GET http://other/x``) and authority-form (``CONNECT host:443``): this is not a
  forward proxy;
- asterisk-form (``OPTIONS *``): it means the server, and the server is not the app;
- a target starting with ``//``: URL parsers read ``//host:port/x`` as a network path, which is how
  a naive ``urljoin`` ends up talking to ``host:port``;
- a path with dot segments (``.``, ``..``, percent-encoded or not): a URL join removes them, so the
  path a proxy checks and the path its app routes would differ (``/livez/../api/v1/whoami`` is not
  a probe).

:func:`parse_target` returns the raw path and query, passed on byte for byte, and the decoded path
the app will route (WSGI's ``PATH_INFO`` is percent-decoded), on which the sidecar decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from meshcontract import variable

__all__ = ["MAX_TARGET_BYTES", "BadTarget", "Target", "parse_target"]

# Browsers and proxies commonly cap URLs at 8 KB; an API's URLs are far shorter. Above this, 414
# (``MESHAUTH_SIDECAR_MAX_URL_BYTES``'s default in the runtime contract).
MAX_TARGET_BYTES: Final = int(variable("MESHAUTH_SIDECAR_MAX_URL_BYTES").default or 0)
_DOT_SEGMENTS: Final = frozenset({".", ".."})


class BadTarget(Exception):
    """A request target the sidecar will not forward; ``status``/``reason``/``detail`` are the answer."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        super().__init__(f"{status} {reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Target:
    """An origin-form request target, split."""

    raw_path: str
    """The path exactly as received (still percent-encoded)."""
    raw_query: str
    """The query string exactly as received, without ``?`` (empty when there is none)."""
    path: str
    """The percent-decoded path: what the app routes, and what the sidecar decides on."""


def parse_target(raw: str, max_bytes: int = MAX_TARGET_BYTES) -> Target:
    """Split an origin-form request target; raise :class:`BadTarget` for anything else."""
    if len(raw) > max_bytes:
        raise BadTarget(414, "uri_too_long", f"The request target is longer than {max_bytes} bytes.")
    if not raw.startswith("/") or raw.startswith("//"):
        # Absolute-form, authority-form, asterisk-form, or a network-path reference.
        raise BadTarget(400, "bad_request_target", "The request target must be a path starting with one '/'.")
    raw_path, _, raw_query = raw.partition("?")
    if "#" in raw:
        raise BadTarget(400, "bad_request_target", "A request target cannot carry a fragment.")
    path = unquote(raw_path, errors="surrogateescape") if "%" in raw_path else raw_path
    if "." in path and not _DOT_SEGMENTS.isdisjoint(path.split("/")):
        raise BadTarget(400, "path_not_normalized", "The path must not contain '.' or '..' segments.")
    return Target(raw_path, raw_query, path)
