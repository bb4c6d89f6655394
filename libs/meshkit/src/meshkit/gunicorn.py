"""gunicorn configuration shared by every service: ``gunicorn --config python:meshkit.gunicorn [<svc>.wsgi]``.

Every value comes from a ``GUNICORN_*`` environment variable, its type and its default (one that suits
a pod) from the runtime contract (:mod:`meshcontract`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.http import wsgi

from meshcontract import QUIET_PATHS, REQUEST_ID_HEADER, REQUEST_ID_META
from meshkit import heartbeat
from meshkit.env import setting


def cpu_limit(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: the cgroup v2 quota when one is set, else the visible cores.

    ``os.cpu_count()`` reports the node's cores; a pod limited to one CPU on a 64-core node would
    otherwise start 129 workers and be throttled into timeouts.
    """
    try:
        quota, period = cgroup_cpu_max.read_text().split()
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """gunicorn's rule of thumb for sync workers: two per CPU plus one."""
    return 2 * cpu_limit() + 1


#: How late an access line may reach stdout.
FLUSH_SECONDS = 0.2
#: Lines a worker holds at most: beyond it, requests wait for the write (a stdout that does not keep up).
MAX_QUEUED = 10_000


class LineBatch:
    """Lines written in one ``write`` by a thread of the worker, at most ``delay`` seconds after the first.

    gthread serves requests on several threads of one process: a ``write`` per request, under the
    logging handler's lock, hands the GIL from thread to thread on every request. Side by side (wrk
    on ``/api/v1/whoami``, in-process mode, eight alternating 3-s runs) the access line written that
    way cost about 80-100 us of a worker's CPU per request, where building it takes 13. Batched, a
    request only appends its line. Lines left when the worker stops are written by ``worker_exit``.
    Memory stays bounded: with ``limit`` lines queued (stdout blocked, or slower than the requests), the
    request that adds the next one writes them itself, waiting as a write per request made it wait.
    """

    def __init__(
        self, write: Callable[[str], object], delay: float = FLUSH_SECONDS, limit: int = MAX_QUEUED
    ) -> None:
        self._write = write
        self._delay = delay
        self._limit = limit
        self._lines: deque[str] = deque()  # appended by any thread, taken by the writer
        self._pending = threading.Event()
        self._flushing = threading.Lock()
        self._writer_pid = 0  # the process whose writer thread runs (threads do not survive fork)

    def add(self, line: str) -> None:
        """Queue ``line`` (ending in a newline); it is written within ``delay`` seconds."""
        self._lines.append(line)
        if len(self._lines) >= self._limit:
            self.flush()  # waits while the writer's own write is blocked
            return
        if not self._pending.is_set():
            # The line is queued before the flag is read, so a writer that clears the flag after
            # this check takes the line with it.
            self._pending.set()
            if self._writer_pid != os.getpid():
                self._start_writer()

    def flush(self) -> None:
        """Write every queued line now."""
        with self._flushing:
            lines, batch = self._lines, []
            while lines:
                batch.append(lines.popleft())
            if batch:
                with contextlib.suppress(OSError, ValueError):  # a closed stdout must not fail requests
                    self._write("".join(batch))

    def _start_writer(self) -> None:
        with self._flushing:
            if self._writer_pid == os.getpid():
                return
            self._writer_pid = os.getpid()
            threading.Thread(target=self._run, name="access-lines", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(self._delay)
            self._pending.clear()
            self.flush()


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


#: This worker's access lines on their way to stdout.
ACCESS_LINES = LineBatch(_stdout)


class JsonAccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with access lines as JSON objects; probes and scrapes are not logged.

    Lines for stdout (``accesslog = "-"`` and no logging configuration of the user's) go through
    :data:`ACCESS_LINES`, in batches; any other destination through gunicorn's access logger.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # Read on every request: decided here, once per configuration (gunicorn runs it again on a reload).
        own_config = bool(cfg.logconfig or cfg.logconfig_dict)
        self._lines_on = bool(cfg.accesslog) or own_config
        self._lines_batched = cfg.accesslog == "-" and not own_config

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self._lines_on:
            return
        path = environ.get("PATH_INFO")
        if path in QUIET_PATHS:
            return
        request_id = next((v for k, v in resp.headers or () if k == REQUEST_ID_HEADER), None)
        sent = getattr(resp, "sent", None)
        # The text json.dumps would write for these fields, built directly (a dict and json.dumps
        # per request cost more than the line is worth).
        line = (
            f'{{"ts": "{_now()}", "level": "INFO", "logger": "gunicorn.access", '
            f'"method": {_quoted(environ.get("REQUEST_METHOD"))}, "path": {_quoted(path)}, '
            f'"status": {int(str(resp.status).split(None, 1)[0])}, '
            f'"duration_ms": {round(request_time.total_seconds() * 1000, 2)}, '
            f'"bytes": {sent if isinstance(sent, int) else "null"}, '
            f'"remote_addr": {_quoted(environ.get("REMOTE_ADDR"))}, '
            f'"user_agent": {_quoted(environ.get("HTTP_USER_AGENT"))}, '
            f'"request_id": {_quoted(request_id or environ.get(REQUEST_ID_META))}}}'
        )
        if self._lines_batched:
            ACCESS_LINES.add(line + "\n")
        else:
            self.access_log.info(line)


def _quoted(value: object) -> str:
    return encode_basestring_ascii(value) if isinstance(value, str) else "null"


_clock: list[object] = [0, ""]


def _now() -> str:
    # The line's resolution is one second: formatted once per second, not per request.
    second = int(time.time())
    if _clock[0] != second:
        _clock[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))]
    return str(_clock[1])


class _Held:
    """Stands in for the client socket while gunicorn writes a response's first piece."""

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.pieces.append(data)


class OneWriteResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, but its head leaves with the first piece of the body, in one ``sendall``.

    gunicorn writes the head and then the body: two system calls for every answer, and behind the
    sidecar two wake-ups, reads and parses of the sidecar's event loop for one answer. Everything
    else (framing, later pieces, ``sendfile``, a bodiless answer's head, sent on close) is gunicorn's.
    """

    def write(self, arg: bytes) -> None:
        if self.headers_sent:
            super().write(arg)
            return
        sock: Any = self.sock
        held = _Held()
        self.sock: Any = held
        try:
            super().write(arg)
        finally:
            self.sock = sock
            if held.pieces:
                sock.sendall(b"".join(held.pieces))


# gunicorn builds every HTTP/1.1 response from this name (wsgi.create), in every worker.
wsgi.Response = OneWriteResponse

bind = [setting("GUNICORN_BIND")]  # a pod listens on its own IP
# The internal port (/metrics, the admin): a second listener, so the public port never serves them
# (meshkit.probes tells the two apart by the listening socket).
if metrics_bind := setting("METRICS_BIND"):
    bind.append(metrics_bind)
    if metrics_bind.startswith("fd://"):
        # A socket inherited from a supervisor (`mesh up`). gunicorn closes that descriptor once it
        # has taken the socket over, so the workers (meshkit.probes) are told its address now.
        with socket.socket(fileno=os.dup(int(metrics_bind.removeprefix("fd://")))) as held:
            host, port = held.getsockname()[:2]
        os.environ["METRICS_BIND"] = f"{host}:{port}"
workers = setting("GUNICORN_WORKERS", fallback=default_workers())
threads = setting("GUNICORN_THREADS")
# gthread, even with one thread: sync workers close the connection after every request, so the
# sidecar (or any proxy in front) would pay a TCP set-up per request; gthread keeps connections
# alive for `keepalive` seconds, parked in a poller, not holding a thread.
worker_class = "gthread"
timeout = setting("GUNICORN_TIMEOUT")
graceful_timeout = setting("GUNICORN_GRACEFUL_TIMEOUT")
keepalive = setting("GUNICORN_KEEPALIVE")
max_requests = setting("GUNICORN_MAX_REQUESTS")
max_requests_jitter = setting("GUNICORN_MAX_REQUESTS_JITTER")
# Heartbeat files on a disk-backed /tmp can stall workers; /dev/shm is memory (and writable with a
# read-only root filesystem when mounted as an emptyDir).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# gunicorn's own limit (8 KiB) answers an oversized header with an HTML 431 before Django runs; let
# meshauth see it and answer a too-large token with its JSON 401. The sidecar caps headers itself.
limit_request_field_size = setting("GUNICORN_LIMIT_REQUEST_FIELD_SIZE")
# The sidecar lets a client send 100 header fields (its JSON 431 above that) and adds up to six of
# its own (principal, request ID, forwarded-for/-proto): gunicorn's default of 100 would answer the
# sum with an HTML 431.
limit_request_fields = setting("GUNICORN_LIMIT_REQUEST_FIELDS")
# gunicorn's largest request line (its default, 4094, is below the sidecar's 4 KiB target limit):
# behind a sidecar, the sidecar's JSON 414 is the one a client meets.
limit_request_line = setting("GUNICORN_LIMIT_REQUEST_LINE")
# Behind the auth sidecar the sidecar writes the pod's access line (the requests it refused too), so
# gunicorn's would say the same thing twice, at the app's CPU cost, on every request.
accesslog = "-" if setting("GUNICORN_ACCESS_LOG") else None
errorlog = "-"
logger_class = JsonAccessLogger
loglevel = setting("LOG_LEVEL").lower()
# The app logs its own errors as JSON; gunicorn's error log keeps its own format on stderr.
forwarded_allow_ips = ",".join(setting("GUNICORN_FORWARDED_ALLOW_IPS"))  # gunicorn wants its string
proc_name = setting("GUNICORN_PROC_NAME")
# The app when the command names none, as the images' entry point does (one Dockerfile builds every
# service): the project's wsgi module next to its settings, ``identity.settings`` -> ``identity.wsgi``.
# A command that names its app (the charts, `mesh up`) serves that one.
_settings_module = setting("DJANGO_SETTINGS_MODULE") or ""
wsgi_app = f"{_settings_module.rpartition('.')[0]}.wsgi" if "." in _settings_module else None
# gunicorn 23+ opens a control socket (for `gunicornc`) at $HOME/.gunicorn/gunicorn.ctl by default:
# under a read-only root filesystem (HOME=/nonexistent) that logs an error at every start, and masters
# sharing a HOME (`make up`) would fight over one socket. Each master gets its own in the temporary
# directory instead (the pod's memory-backed /tmp); GUNICORN_CONTROL_SOCKET names another path, and
# `off` turns it off.
control_socket = setting(
    "GUNICORN_CONTROL_SOCKET", fallback=os.path.join(tempfile.gettempdir(), f"gunicorn-{os.getpid()}.ctl")
)
control_socket_disable = control_socket == "off"


def remove_stale_control_sockets(directory: Path) -> list[Path]:
    """Delete the control sockets (``gunicorn-<pid>.ctl``) of masters that no longer run.

    A master stopped cleanly removes its own; one that was killed (SIGKILL, an OOM kill) leaves it behind,
    and under `make up` masters come and go in one temporary directory. Returns what was deleted.
    """
    removed = []
    for path in directory.glob("gunicorn-*.ctl"):
        pid = path.stem.removeprefix("gunicorn-")
        if not pid.isdigit() or _running(int(pid)):
            continue
        with contextlib.suppress(OSError):  # another user's, or gone already
            path.unlink()
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def on_starting(server: Any) -> None:
    """Start every master with an empty metrics directory, so old workers' files are not summed.

    Control sockets left behind by killed masters are removed too.
    """
    if not control_socket_disable:
        remove_stale_control_sockets(Path(control_socket).parent)
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)  # another master starting on the same directory


def when_ready(server: Any) -> None:
    """Do not kill workers for a heartbeat missed while the whole container was paused; leave a
    supervisor's sockets to the supervisor.

    A paused container (SIGSTOP, the cgroup freezer, a suspended VM) resumes with every heartbeat
    file as old as the pause, and gunicorn would kill every worker for "WORKER TIMEOUT" at once.
    """
    heartbeat.install(server)
    if bind[0].startswith("fd://"):
        # The listening sockets are a supervisor's (`mesh up` holds them across gunicorn generations):
        # a master that stops must leave a unix socket's path in place, as it does for sockets systemd
        # hands over. (gunicorn's only other use of the flag is its USR2 re-exec, which `mesh up` does
        # not use: it starts a new master on the same sockets instead.)
        server.systemd = True


def post_fork(server: Any, worker: Any) -> None:
    """Spread the first workers' recycling points over one ``max_requests`` period.

    gunicorn gives every worker ``max_requests`` plus a small random jitter, so workers started
    together serve about as many requests and are recycled within seconds of each other: while
    the replacements load Django, nobody serves. The first generation gets 1/N, 2/N … N/N of the
    limit instead; replacements get the full limit, which keeps the phases N apart for good.
    """
    if max_requests <= 0 or worker.age > server.num_workers:
        return
    worker.max_requests = max(1, max_requests * worker.age // server.num_workers) + random.randint(  # noqa: S311
        0, max_requests_jitter
    )


def worker_exit(server: Any, worker: Any) -> None:
    """Write the access lines still queued before the worker is gone."""
    ACCESS_LINES.flush()


def post_worker_init(worker: Any) -> None:
    """Say when a worker can serve: a supervisor swapping generations waits for this line."""
    worker.log.info("Worker %s: app loaded", worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges; its counters stay summed (they must not go backwards)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
