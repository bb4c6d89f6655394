"""CPU time of process trees, from ``/proc``: what a request costs, rather than how fast it went.

Throughput on a shared machine swings with the neighbours; CPU seconds spent per request barely
move, because a process that waits for a core is not charged for the wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["TICK_SECONDS", "cpu_ticks", "process_table", "spent", "tree"]

TICK_SECONDS = 1.0 / os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, utime + stime in clock ticks)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # The command name is in parentheses and may hold spaces or ')': split after the last one.
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (stat field 3): ppid is field 4, utime 14, stime 15.
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree(root: int, table: Mapping[int, tuple[int, int]]) -> set[int]:
    """``root`` and all its descendants (a gunicorn master and its workers)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_ticks(groups: Mapping[str, Iterable[int]]) -> dict[str, dict[int, int]]:
    """Per named group of root pids: ticks used so far by each process of their trees."""
    table = process_table()
    return {
        name: {pid: table[pid][1] for root in roots for pid in tree(root, table)}
        for name, roots in groups.items()
    }


def spent(before: Mapping[int, int], after: Mapping[int, int]) -> float:
    """CPU seconds a group used between two :func:`cpu_ticks` snapshots.

    A process that appeared in between counts from zero; one that exited took its time with it,
    which is why the bench turns worker recycling off.
    """
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) * TICK_SECONDS
