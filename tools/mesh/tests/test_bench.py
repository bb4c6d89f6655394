"""`mesh bench --json`: every mode and ratio is measured and written (figures are not judged here:
timing belongs to `make bench` on a quiet machine, never to a test on a shared one)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh import tooling
from mesh.cpu import cpu_ticks, process_table, spent, tree
from mesh.registry import find_root
from mesh.testing import tool_missing

MODES = ("baseline", "inprocess", "sidecar", "introspect", "inprocess_real", "sidecar_real")
ENGINE_MODES = ("sidecar_haproxy", "sidecar_haproxy_real")
REFERENCE_MODES = ("nginx", "nginx_real")
RATIOS = ("inprocess_over_baseline", "sidecar_over_inprocess", "sidecar_over_inprocess_real")
ENGINE_RATIOS = ("sidecar_haproxy_over_inprocess", "sidecar_haproxy_over_inprocess_real")
REFERENCE_RATIOS = ("nginx_over_inprocess", "nginx_over_inprocess_real")


def test_cpu_of_a_process_tree_counts_its_children() -> None:
    """A gunicorn master does little; its workers do the work: the tree's CPU must include them."""
    burn = (
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    )
    script = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn!r}])"
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        before = cpu_ticks({"tree": [parent.pid]})["tree"]
        used, deadline = 0.0, time.monotonic() + 30
        while used < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
            used = spent(before, cpu_ticks({"tree": [parent.pid]})["tree"])
        assert len(tree(parent.pid, process_table())) == 2, "the child is part of the tree"
        assert used >= 0.25, f"the child's CPU was not counted: {used:.2f} s"
    finally:
        # The parent leads nothing else: kill the child (its only child) first, then the parent.
        for pid in tree(parent.pid, process_table()) - {parent.pid}:
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def test_a_run_one_worker_served_alone_is_told_from_a_shared_one() -> None:
    """The master's own ticks do not count; a worker that did (almost) nothing makes the run lopsided."""
    from mesh.bench import MIN_WORKER_SHARE, _smallest_worker_share

    before = {100: 5, 101: 10, 102: 10}
    alone = _smallest_worker_share([100], before, {100: 90, 101: 310, 102: 11})
    shared = _smallest_worker_share([100], before, {100: 90, 101: 160, 102: 150})
    assert alone < MIN_WORKER_SHARE <= shared
    assert shared == pytest.approx(140 / 290)


def test_a_round_of_slices_weighs_each_slice_by_its_requests() -> None:
    """A slow slice counts for its share of the time and of the requests, not as one vote in two."""
    from mesh.bench import Round, combine

    fast = Round(4000, 2.0, 10.0, 4000, {"app": 500.0, "total": 500.0}, worker_share=0.45, attempts=1)
    slow = Round(1000, 8.0, 40.0, 1000, {"app": 1000.0, "total": 1000.0}, worker_share=0.30, attempts=3)
    round_ = combine([fast, slow])
    assert round_.requests == 5000
    assert round_.rps == pytest.approx(2500)  # 5,000 requests in 2 s, not the mean of 4,000 and 1,000
    assert round_.cpu_us_per_request["app"] == pytest.approx(600)  # (4000 * 500 + 1000 * 1000) / 5000
    assert round_.cpu_us_per_request["total"] == pytest.approx(600)
    assert round_.worker_share == 0.30
    assert (round_.attempts, round_.slices) == (4, 2)
    assert (round_.p50_ms, round_.p99_ms) == (5.0, 25.0)


def test_bench_json_has_every_figure(admin_url: str, tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        tool_missing("wrk is not installed")
    if tooling.ensure_nginx() is None:
        tool_missing("nginx is not installed (Debian package nginx; .ci/run installs it)")
    if tooling.ensure_haproxy() is None:
        tool_missing("HAProxy is not installed (Debian package haproxy; .ci/run installs it)")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "mesh", "bench", "--seconds", "2", "--rounds", "1", "--json", str(out)],
        cwd=find_root(),
        env={**os.environ, "DATABASE_ADMIN_URL": admin_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {*MODES, *ENGINE_MODES, *REFERENCE_MODES}
    for name, mode in report["modes"].items():
        for key in ("rps", "p50_ms", "p99_ms"):
            assert mode[key] > 0, (name, key, mode[key])
        cpu = mode["cpu_us_per_request"]
        assert cpu["app"] > 0, (name, cpu)
        assert cpu["total"] >= cpu["app"]
        assert len(mode["rounds"]) == 1
        # Two one-second slices (introspection, alone: one run), each served by both gunicorn workers
        # (or measured again, at most eight times).
        slices = 1 if name == "introspect" else 2
        assert mode["rounds"][0]["slices"] == slices
        assert slices <= mode["rounds"][0]["attempts"] <= 8 * slices
        assert 0 <= mode["rounds"][0]["worker_share"] <= 0.5
    for mode in ("sidecar", "sidecar_real", *ENGINE_MODES):  # HAProxy's CPU counts as its sidecar's
        assert report["modes"][mode]["cpu_us_per_request"]["sidecar"] > 0
    for mode in REFERENCE_MODES:  # the reference proxy's own CPU, beside the app's
        assert report["modes"][mode]["cpu_us_per_request"]["nginx"] > 0
    assert report["config"]["reference_proxy"], "the nginx version the reference ran"
    assert report["config"]["haproxy"], "the HAProxy version the engine ran"
    assert report["modes"]["introspect"]["cpu_us_per_request"]["identity"] > 0
    for ratio in (*RATIOS, *ENGINE_RATIOS, *REFERENCE_RATIOS):
        assert report["ratios"][ratio] > 0, ratio
        spread = report["spread"][ratio]
        assert spread["min"] <= report["ratios"][ratio] <= spread["max"]
        assert report["ratios"][f"{ratio}_by_cpu"] > 0, ratio
    assert "sidecar_cpu_us_per_request" in report["targets"]
    assert {*ENGINE_RATIOS, "sidecar_haproxy_cpu_us_per_request"} <= set(report["targets"])
    assert not set(REFERENCE_RATIOS) & set(report["targets"]), "a reference has no target"
    assert "CPU us/request" in run.stdout
    assert "nginx CPU per proxied whoami request" in run.stdout
    assert report["runs_measured_again"] >= 0


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--seconds", "0"]])
def test_bench_refuses_nonsense_without_starting_anything(argv: list[str]) -> None:
    if shutil.which("wrk") is None:
        tool_missing("wrk is not installed")
    run = subprocess.run(
        [sys.executable, "-m", "mesh", "bench", *argv],
        cwd=find_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "at least 1" in run.stderr
