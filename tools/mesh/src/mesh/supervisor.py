"""Keep the fleet running as a kubelet keeps a pod's containers: restart what dies, with back-off.

Each service's processes (gunicorn, its sidecar) are watched once per tick. A process that exits
is restarted after an exponential back-off (0.5 s, 1 s, 2 s … 16 s); one that then runs for
``stable_after`` seconds is forgiven its failures. A process that fails ``max_failures`` times in a
row makes the supervisor give up (`mesh up` then exits 1), where the kubelet would report
CrashLoopBackOff for ever.

The fleet holds every listening socket, so a restarted process takes over the same socket: while
it starts, connections wait in the socket's queue instead of being refused. :meth:`replace` uses
the same socket to swap a service for a new generation with no request lost: the new gunicorn
starts on the socket before the old one is asked to finish its requests and stop.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from mesh.fleet import Fleet
from mesh.processes import ManagedProcess
from mesh.registry import Service
from meshcontract import READYZ

__all__ = ["GaveUp", "RestartPolicy", "Supervisor"]

# What meshkit's gunicorn config logs once a worker has loaded the app (post_worker_init).
APP_LOADED = "app loaded"


@dataclass(frozen=True)
class RestartPolicy:
    """The kubelet's CrashLoopBackOff, scaled to a laptop."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 16.0
    stable_after: float = 30.0
    max_failures: int = 5

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1-based) of a failing process."""
        return min(self.maximum, self.initial * self.factor ** max(0, failures - 1))


class GaveUp(Exception):
    """A process kept failing; the mesh cannot be kept running."""


@dataclass
class _Slot:
    """One container of a service: its current process and its restart state."""

    service: Service
    index: int  # position in fleet.processes[service] (0: gunicorn, 1: sidecar)
    failures: int = 0
    restart_at: float | None = None
    down_since: float | None = None


@dataclass
class Supervisor:
    fleet: Fleet
    say: Callable[[str], None] = lambda _: None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    # Process groups of dead masters whose orphan workers are finishing; killed at the deadline.
    _draining: list[tuple[ManagedProcess, float]] = field(default_factory=list)
    _slots: list[_Slot] = field(default_factory=list)
    restarts: int = 0

    def __post_init__(self) -> None:
        for service in self.fleet.services:
            for index in range(len(self.fleet.processes.get(service.name, []))):
                self._slots.append(_Slot(service, index))

    def _process(self, slot: _Slot) -> ManagedProcess:
        return self.fleet.processes[slot.service.name][slot.index]

    def tick(self) -> None:
        """Notice deaths, restart what is due, report recoveries; raises :class:`GaveUp`."""
        now = time.monotonic()
        for slot in self._slots:
            proc = self._process(slot)
            if slot.restart_at is None and not proc.alive():
                self._died(slot, proc, now)
            elif slot.restart_at is not None and now >= slot.restart_at:
                self._restart(slot)
            elif slot.down_since is not None and self._serving(slot.service):
                self.say(f"{slot.service.name}: serving again after {now - slot.down_since:.1f} s")
                slot.down_since = None
        self._reap_draining(now)

    def _died(self, slot: _Slot, proc: ManagedProcess, now: float) -> None:
        code = proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"
        if proc.uptime >= self.policy.stable_after:
            slot.failures = 0
        slot.failures += 1
        if slot.failures > self.policy.max_failures:
            raise GaveUp(
                f"{proc.name} failed {slot.failures} times in a row ({how}); giving up. "
                f"Last lines of {proc.log_path}:\n{proc.tail()}"
            )
        # Orphan workers of a dead master still hold requests: let them finish, then end them.
        proc.kill_group(signal.SIGTERM)
        self._draining.append((proc, now + 20.0))
        delay = self.policy.delay(slot.failures)
        slot.restart_at = now + delay
        slot.down_since = slot.down_since or now
        self.say(
            f"{proc.name} {how} after {proc.uptime:.1f} s; restarting in {delay:.1f} s "
            f"(failure {slot.failures} of {self.policy.max_failures} allowed in a row)"
        )

    def _restart(self, slot: _Slot) -> None:
        fresh = self._fresh(slot)
        fresh.start()
        self.fleet.processes[slot.service.name][slot.index] = fresh
        slot.restart_at = None
        self.restarts += 1
        self.say(f"{fresh.name}: restarted (pid {fresh.pid})")

    def _fresh(self, slot: _Slot) -> ManagedProcess:
        if slot.index == 0:
            return self.fleet.app_process(slot.service)
        return self.fleet.sidecar_process(slot.service)

    def _serving(self, service: Service) -> bool:
        try:
            return httpx.get(f"{self.fleet.url(service.name)}{READYZ}", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def _reap_draining(self, now: float) -> None:
        for entry in list(self._draining):
            proc, deadline = entry
            if not _group_alive(proc.pid):
                self._draining.remove(entry)
            elif now >= deadline:
                proc.kill_group(signal.SIGKILL)
                self._draining.remove(entry)

    def stop(self) -> None:
        """Stop every process (the fleet's order), and what is left of dead masters' groups."""
        self.fleet.stop()
        for proc, _ in self._draining:
            proc.kill_group(signal.SIGKILL)
        self._draining.clear()

    # -- zero-loss replacement -------------------------------------------------------------------

    def replace(self, name: str, timeout: float = 90.0) -> float:
        """Swap ``name``'s processes for new ones with no request lost; returns the seconds taken.

        The new gunicorn starts on the socket the old one serves, and only once all its workers
        are up is the old one sent SIGTERM (it stops accepting and finishes what it holds). The
        sidecar is swapped the same way. Runs on the supervisor's thread (see ``die_with_parent``).
        """
        service = self.fleet.registry[name]
        started = time.monotonic()
        procs = self.fleet.processes[name]
        app = self.fleet.app_process(service)
        app.start()
        _wait_workers(app, self.fleet.workers, timeout)
        procs[0].stop(timeout=30)
        procs[0] = app
        if len(procs) > 1:
            sidecar = self.fleet.sidecar_process(service)
            offset = _size(sidecar.log_path)
            sidecar.start()
            _wait_log(sidecar, offset, "listening on", timeout)
            procs[1].stop(timeout=30)
            procs[1] = sidecar
        for slot in self._slots:
            if slot.service.name == name:
                slot.failures, slot.restart_at, slot.down_since = 0, None, None
        return time.monotonic() - started


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _wait_workers(app: ManagedProcess, workers: int, timeout: float) -> None:
    """Wait until gunicorn's master has ``workers`` workers that have loaded the app.

    meshkit's ``post_worker_init`` hook logs ``app loaded`` when a worker is ready to accept.
    """
    offset = _size(app.log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not app.alive():
            raise RuntimeError(f"{app.name} exited while starting:\n{app.tail()}")
        if _read_from(app.log_path, offset).count(APP_LOADED) >= workers:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{app.name} did not start its {workers} workers within {timeout:.0f} s")


def _read_from(path: os.PathLike[str], offset: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _wait_log(proc: ManagedProcess, offset: int, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        if marker in _read_from(proc.log_path, offset):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not log {marker!r} within {timeout:.0f} s")
