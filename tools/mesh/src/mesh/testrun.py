"""`mesh test`: every suite in its own pytest process, then one summary line for the whole run.

Each service's tests need their own Django settings, so they cannot share a process; the libs,
the tools and the repository-level tests (charts, workflows, end-to-end) are suites of their own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.registry import Registry

__all__ = ["run_suites", "suites"]

# The slowest tests (and fixtures) of each suite, so the 25-minute budget has a map.
_DURATIONS = ("--durations=10", "--durations-min=5")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


@dataclass
class SuiteResult:
    path: str
    returncode: int
    counts: dict[str, int]
    seconds: float


def suites(registry: Registry) -> list[Path]:
    """Libraries first (fast, catch the most), then tools, services, and the repository suite."""
    root = registry.root
    found = [root / "libs" / "meshkit", root / "libs" / "meshauth", root / "tools" / "mesh"]
    found += [registry.service_dir(service.name) for service in registry]
    found.append(root)
    return found


def _run(path: Path, root: Path, extra: list[str]) -> SuiteResult:
    label = str(path.relative_to(root)) if path != root else "tests (repository)"
    print(f"\n===== {label} =====", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *_DURATIONS, *extra],
        cwd=path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.stdout is None:
        raise RuntimeError("pytest's output pipe is missing")
    last_summary = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if _COUNT.search(line) and " in " in line:
            last_summary = line
    proc.wait()
    counts: dict[str, int] = {}
    for number, kind in _COUNT.findall(last_summary):
        key = "errors" if kind.startswith("error") else kind
        counts[key] = counts.get(key, 0) + int(number)
    return SuiteResult(label, proc.returncode, counts, time.monotonic() - started)


def run_suites(registry: Registry, extra: list[str]) -> int:
    results = [_run(path, registry.root, extra) for path in suites(registry)]
    print("\n===== summary =====")
    totals: dict[str, int] = {}
    for result in results:
        verdict = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        counts = ", ".join(f"{n} {k}" for k, n in result.counts.items()) or "no tests"
        print(f"  {result.path:<28} {verdict:<18} {counts}  ({result.seconds:.0f} s)")
        for key, number in result.counts.items():
            totals[key] = totals.get(key, 0) + number
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    failing_suites = [r for r in results if r.returncode != 0]
    # Suites that failed without a count (collection error, exit 5: no tests) still fail the run.
    failed += sum(1 for r in failing_suites if not (r.counts.get("failed") or r.counts.get("errors")))
    line = f"{totals.get('passed', 0)} passed, {failed} failed"
    if totals.get("skipped"):
        line += f", {totals['skipped']} skipped"
    print(line, flush=True)
    return 1 if failing_suites else 0
