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
from typing import TypeVar

__all__ = ["StallGuard", "Stalled"]

log = logging.getLogger("meshauth.sidecar")

T = TypeVar("T")


class Stalled(Exception):
    """The app answered nothing, not even its liveness probe: the call was given up."""


class StallGuard:
    """Watches the app's answers; :meth:`call` gives up on a request once the app is stalled.

    Nothing is added per request but a note of when its call to the app started: one task looks
    at the calls in flight a few times a second (wrapping every call in a task of its own, to wait
    on it with a timeout, cost the sidecar about 12 us per request), and cancels those it gives up.
    """

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
        self._tick = min(0.25, after / 4)
        self._answered = clock()  # when the app last answered anything
        self._stalled_since: float | None = None
        self._probing: asyncio.Task[bool] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # The request handlers' tasks waiting on the app, and when their call started.
        self._inflight: dict[asyncio.Task[object], float] = {}
        self._given_up: set[asyncio.Task[object]] = set()
        self._overseer: asyncio.Task[None] | None = None

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

    async def call(self, request: Awaitable[T]) -> T:
        """Await ``request`` (the call to the app); raises :class:`Stalled` once the app stalls.

        A request is given up once it and the app have been silent for ``after`` seconds and the
        app's liveness probe is not answered either; a slow request of an app that answers its
        probe is waited for.
        """
        task = asyncio.current_task()
        assert task is not None, "called from a task"  # noqa: S101 - programming error
        self._inflight[task] = self._clock()
        if self._overseer is None:
            self._overseer = asyncio.create_task(self._oversee())
        try:
            return await request
        except asyncio.CancelledError:
            if task not in self._given_up:
                raise  # the client went away, or the sidecar is stopping
            self._given_up.discard(task)
            task.uncancel()
            raise Stalled from None
        finally:
            del self._inflight[task]

    async def _oversee(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if not self._overdue():
                continue
            if not self.stalled and await self._alive():
                continue  # slow, not stalled: the probe's answer counts as one
            overdue = self._overdue()  # those still waiting after the probe
            if overdue:
                self._stall()
            for task in overdue:
                self._given_up.add(task)
                task.cancel()

    def _overdue(self) -> list[asyncio.Task[object]]:
        now, answered = self._clock(), self._answered
        return [
            task
            for task, started in self._inflight.items()
            if now - max(started, answered) >= self.after and task not in self._given_up
        ]

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
        for task in (self._overseer, self._watcher, self._probing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
