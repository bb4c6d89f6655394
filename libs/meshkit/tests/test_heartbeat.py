"""gunicorn's worker timeout excuses the seconds the master itself did not run."""

from __future__ import annotations

from meshkit.heartbeat import PauseAllowance

TIMEOUT = 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seconds_until_killed(allowance: PauseAllowance, clock: Clock, heartbeat: float) -> int:
    """The master's loop passing once a second, until the worker last heard at ``heartbeat`` is overdue."""
    for second in range(1, 10 * TIMEOUT):
        clock.now += 1.0
        assert allowance.tick() == 0.0
        if allowance.overdue(heartbeat, TIMEOUT):
            return second
    raise AssertionError("never overdue")


def test_a_pause_of_the_whole_container_is_excused() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    for _ in range(5):  # the master running: a pass every second
        clock.now += 1.0
        allowance.tick()
    heartbeat = clock.now - 0.5  # the worker's last heartbeat, just before the pause
    clock.now += 45.0  # master and workers stopped together, then resumed
    assert allowance.tick() == 44.0
    # On resume the heartbeat is 45.5 s old, but the worker was silent for 1.5 s of running time:
    # one that sends no heartbeat again is killed once that silence passes the timeout.
    assert not allowance.overdue(heartbeat, TIMEOUT)
    assert seconds_until_killed(allowance, clock, heartbeat) == 29


def test_a_stuck_worker_is_still_killed_on_time_while_the_master_runs() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    assert seconds_until_killed(allowance, clock, heartbeat=clock.now) == 31


def test_a_pause_before_the_last_heartbeat_excuses_nothing() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    clock.now += 20.0
    assert allowance.tick() == 19.0
    # The worker ran after the pause (its heartbeat is half a second later).
    assert seconds_until_killed(allowance, clock, heartbeat=clock.now + 0.5) == 31


def test_a_late_pass_shorter_than_two_periods_is_not_a_pause() -> None:
    clock = Clock()
    allowance = PauseAllowance(clock)
    clock.now += 1.9  # a busy pass (forking a worker, a loaded machine)
    assert allowance.tick() == 0.0
    assert allowance.excused(clock.now - 10) == 0.0
