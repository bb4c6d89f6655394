"""Tell a slow request from an app that has stopped answering (frozen, paused, wedged).

A frozen app still has its listening socket: connections are accepted by the kernel and requests
wait, so without this every client hangs until its own timeout (or the sidecar's upstream timeout,
a minute). With it:

- a request the app has not answered for ``after`` seconds, while the app answered nothing else
  either, makes the sidecar ask the app's ``/livez`` (within ``probe_timeout``). An answer, whatever
  its status, means the app is alive and merely slow: the request waits on (up to the upstream
  timeout). No answer means the app is stalled: the request gets a 504 (the app may still act on it
  when it resumes, as with any timeout);
- while the app is stalled, requests get a 503 at once, without reaching the app, and the sidecar
  asks ``/livez`` again every ``probe_interval`` seconds; the first answer ends the stall.

So a client of a frozen app is answered within ``after`` + ``probe_timeout`` seconds, and after that
at once; the same probe paths (``/livez``, ``/readyz``) answer 503 too, so a kubelet sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["StallGuard"]

log = logging.getLogger("meshauth.sidecar")


class StallGuard:
    """Watches the app's answers; :meth:`wait` gives up on a request once the app is stalled."""

    def __init__(
        self,
        after: float,
        probe: Callable[[], Awaitable[bool]],
        probe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after
        self._probe = probe  # whether the app answers its liveness path at all
        self._probe_interval = probe_interval
        self._clock = clock
        self._answered = clock()  # when the app last answered anything
        self._stalled_since: float | None = None
        self._probing: asyncio.Task[bool] | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def stalled(self) -> bool:
        """The app answered nothing, not even its liveness probe: requests are refused at once."""
        return self._stalled_since is not None

    def answered(self) -> None:
        """The app answered a request (its headers arrived)."""
        self._answered = self._clock()
        if self._stalled_since is not None:
            log.warning("app answering again after %.1f s stalled", self._answered - self._stalled_since)
            self._stalled_since = None

    async def wait(self, request: asyncio.Task[Any]) -> bool:
        """Wait for ``request`` (the call to the app); False, and the call cancelled, once the app stalls."""
        started = self._clock()
        try:
            while True:
                silent = self._clock() - max(started, self._answered)
                if silent < self.after:
                    done, _ = await asyncio.wait({request}, timeout=self.after - silent)
                    if done:
                        return True
                    continue
                if not self.stalled and await self._alive():
                    continue  # slow, not stalled: the probe's answer counts as one
                if request.done():
                    return True
                self._stall()
                return False
        finally:
            if not request.done():
                request.cancel()

    async def _alive(self) -> bool:
        # One probe at a time, however many requests are waiting.
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe())
        try:
            alive = await asyncio.shield(self._probing)
        except Exception:
            alive = False
        if alive:
            self.answered()
        return alive

    def _stall(self) -> None:
        if self._stalled_since is not None:
            return
        self._stalled_since = self._clock()
        log.warning("app stalled: nothing answered for %.0f s, not even /livez; answering 503", self.after)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while self.stalled:
            await asyncio.sleep(self._probe_interval)
            await self._alive()

    async def close(self) -> None:
        for task in (self._watcher, self._probing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
