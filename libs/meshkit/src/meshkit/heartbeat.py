"""gunicorn's worker timeout, minus the seconds the master itself was not running.

gunicorn's master kills a worker whose heartbeat file is older than ``timeout``. It checks once per
pass of its loop (about every second). When the whole container is paused (SIGSTOP, the cgroup
freezer, a VM or laptop suspended, a CPU-starved node) the master and its workers stop together; on
resume, the master checks first and finds every heartbeat as old as the pause: it kills healthy
workers for "WORKER TIMEOUT", and the service is down while they reload the app.

:class:`PauseAllowance` notices such pauses from the master's side (a pass of its loop that came
late) and excuses a worker for the part of a pause that falls after its last heartbeat. A worker
that is really stuck is still killed, at most one pause later than it would have been.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["PauseAllowance", "install"]

# The master's loop wakes at least once a second (gunicorn waits for signals for 1 s); a pass that
# comes this much later means the master did not run in between.
LOOP_PERIOD = 1.0
LATE_AFTER = 2.0


class PauseAllowance:
    """The pauses the master has lived through, and how much of them a heartbeat is excused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = 64) -> None:
        self._clock = clock
        self._last = clock()
        self._pauses: deque[tuple[float, float]] = deque(maxlen=keep)  # (paused at, resumed at)

    def tick(self) -> float:
        """Call once per pass of the master's loop; returns the pause just noticed (0 if none)."""
        now = self._clock()
        gap = now - self._last
        self._last = now
        if gap <= LATE_AFTER:
            return 0.0
        # The loop would have run by ``_last + LOOP_PERIOD``: the rest of the gap, nobody ran.
        paused_at = now - gap + LOOP_PERIOD
        self._pauses.append((paused_at, now))
        return now - paused_at

    def excused(self, since: float) -> float:
        """Seconds after ``since`` (a heartbeat's time) during which the master was not running."""
        return sum(max(0.0, resumed - max(since, paused)) for paused, resumed in self._pauses)

    def overdue(self, heartbeat: float, timeout: float) -> bool:
        """Whether a worker last heard from at ``heartbeat`` has been silent for over ``timeout``."""
        return self._clock() - heartbeat - self.excused(heartbeat) > timeout


def install(server: Any) -> PauseAllowance:
    """Replace ``server``'s (gunicorn's Arbiter's) worker-timeout check with one that excuses pauses.

    The same check as gunicorn's ``Arbiter.murder_workers`` (SIGABRT first, SIGKILL if the worker is
    still there at the next check), with :meth:`PauseAllowance.overdue` as the test.
    """
    allowance = PauseAllowance()

    def murder_workers() -> None:
        paused = allowance.tick()
        if paused:
            server.log.warning(
                "gunicorn master did not run for %.1f s (paused or starved); workers get that long "
                "again to send a heartbeat",
                paused,
            )
        if not server.timeout:
            return
        for pid, worker in list(server.WORKERS.items()):
            try:
                if not allowance.overdue(worker.tmp.last_update(), server.timeout):
                    continue
            except (OSError, ValueError):
                continue
            if not worker.aborted:
                server.log.critical("WORKER TIMEOUT (pid:%s)", pid)
                worker.aborted = True
                server.kill_worker(pid, signal.SIGABRT)
            else:
                server.kill_worker(pid, signal.SIGKILL)

    server.murder_workers = murder_workers
    return allowance
