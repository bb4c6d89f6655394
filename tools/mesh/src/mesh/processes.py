"""Start, watch and stop the mesh's processes: gunicorn and its sidecar per service.

Everything runs in its own process group, so stopping a service ends the gunicorn master, its
workers and nothing else; only PIDs started here are ever signalled. Every child also asks the
kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so no child outlives `mesh up`
however it ends, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["ManagedProcess", "die_with_parent", "wait_for_http"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``signum`` when the thread that started it ends.

    The signal is tied to the forking *thread*, so children must be started from a thread that
    lives as long as they should (the supervisor's main thread). Linux only; elsewhere a no-op.
    """
    parent = os.getpid()
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name and sys.platform == "linux" else None

    def preexec() -> None:
        if libc is None:
            return
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: the signal will never come.
            os._exit(1)

    return preexec


@dataclass
class ManagedProcess:
    """One child process with its log file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    # Inherited file descriptors: the listening sockets the supervisor owns (same numbers).
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.process = subprocess.Popen(  # noqa: S603 - argv built by us, no shell
                list(self.argv),
                env=dict(self.env),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=self.pass_fds,
                preexec_fn=die_with_parent(),  # started from the supervisor's thread
            )
        finally:
            log.close()
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def kill_group(self, signum: int = signal.SIGKILL) -> None:
        """Signal what is left of the process group, even when its leader is gone (orphan workers)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def signal(self, signum: int) -> None:
        """Signal the whole process group this process leads (gunicorn master and its workers)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; always reaps the child."""
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(5)
        # Workers that outlived their master would hold the port; the group is ours to clean.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``module`` with this interpreter (the workspace venv)."""
    return [sys.executable, "-m", module, *args]


def wait_for_http(
    url: str, *, timeout: float = 60.0, expect: int = 200, watch: Sequence[ManagedProcess] = ()
) -> None:
    """Poll ``url`` until it answers ``expect``; fail early if a watched process died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in watch:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == expect:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout:.0f} s (last: {last})")
