"""The control socket of a running `mesh up` (``<run dir>/control.sock``): `mesh restart` talks to it.

One request per connection: a line such as ``restart catalog``; one line back, ``ok …`` or
``error …``. Requests are carried out on the supervisor's own thread (children must be started
there, see ``die_with_parent``); this module's thread only queues them and waits for the answer.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ControlServer", "Request", "send"]


@dataclass
class Request:
    words: list[str]
    _answer: queue.Queue[str] = field(default_factory=lambda: queue.Queue(maxsize=1))

    def reply(self, line: str) -> None:
        self._answer.put(line)


class ControlServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        path.chmod(0o600)
        self._sock.listen(8)
        self._requests: queue.Queue[Request] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="mesh-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            line = conn.makefile("r").readline(1024).strip()
            request = Request(line.split())
            self._requests.put(request)
            conn.settimeout(None)
            conn.sendall((request._answer.get() + "\n").encode())

    def pending(self) -> Iterator[Request]:
        """Requests waiting for the supervisor's thread."""
        while True:
            try:
                yield self._requests.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)


def send(path: Path, line: str, timeout: float = 180.0) -> str:
    """Send one request to the mesh whose control socket is ``path``; return its answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall((line + "\n").encode())
        return sock.makefile("r").readline().strip()
