"""gunicorn's worker timeout excuses the seconds the master itself did not run."""

from __future__ import annotations

from meshkit.heartbeat import PauseAllowance


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_loop(allowance: PauseAllowance, clock: Clock, seconds: float) -> None:
    """The master's loop passing once a second."""
    for _ in range(int(seconds)):
        clock.now += 1.0
        assert allowance.tick() == 0.0


def test_a_pause_of_the_whole_container_is_excused() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    run_loop(allowance, clock, 5)
    heartbeat = clock.now - 0.5  # the worker's last heartbeat, just before the pause
    clock.now += 45.0  # master and workers stopped together, then resumed
    assert allowance.tick() == 44.0
    # On resume the heartbeat is 45.5 s old, but the worker was silent for 1.5 s of running time.
    assert not allowance.overdue(heartbeat, timeout=30)
    # A worker that does not send a heartbeat again is killed one timeout later.
    run_loop(allowance, clock, 28)
    assert not allowance.overdue(heartbeat, timeout=30)
    run_loop(allowance, clock, 2)
    assert allowance.overdue(heartbeat, timeout=30)


def test_a_stuck_worker_is_still_killed_on_time_while_the_master_runs() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    heartbeat = clock.now
    run_loop(allowance, clock, 30)
    assert not allowance.overdue(heartbeat, timeout=30)
    run_loop(allowance, clock, 1)
    assert allowance.overdue(heartbeat, timeout=30)


def test_a_pause_before_the_last_heartbeat_excuses_nothing() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    clock.now += 20.0
    assert allowance.tick() == 19.0
    heartbeat = clock.now + 0.5  # the worker ran after the pause
    run_loop(allowance, clock, 31)
    assert allowance.overdue(heartbeat, timeout=30)


def test_a_late_pass_shorter_than_two_periods_is_not_a_pause() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    clock.now += 1.9  # a busy pass (forking a worker, a loaded machine)
    assert allowance.tick() == 0.0
    assert allowance.excused(clock.now - 10) == 0.0
