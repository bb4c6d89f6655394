"""``python -m meshauth.sidecar.probe URL``: a kubelet-style probe run from inside the container.

The kubelet probes a pod from outside; runtimes without a kubelet (``podman kube play``) run a probe
inside the container instead, with ``curl`` or ``nc``, which the slim images do not have. This does
the same check with the image's Python (every image holds meshauth): ``http://…`` succeeds on a 2xx or
3xx answer, ``tcp://host:port`` on an accepted connection. Exit code 0 means healthy, 1 not. The
argument holds no space or shell metacharacter, so it survives runtimes that join a probe's command
into one shell line.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

__all__ = ["check", "main"]

TIMEOUT = 2.0


def check(target: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``target`` is healthy, else why not."""
    parts = urlsplit(target)
    try:
        if parts.scheme == "tcp":
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=timeout):
                return None
        if parts.scheme != "http":
            return f"unsupported target {target!r} (http://… or tcp://host:port)"
        with urllib.request.urlopen(target, timeout=timeout) as response:  # noqa: S310 - http only, checked above
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{target}: HTTP {exc.code}"
    except OSError as exc:
        return f"{target}: {exc}"
    return None if status < 400 else f"{target}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m meshauth.sidecar.probe http://host:port/path | tcp://host:port", file=sys.stderr
        )
        return 2
    problem = check(args[0])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
