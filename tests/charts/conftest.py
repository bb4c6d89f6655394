"""Session fixtures of the chart tests (helpers live in chartlib.py)."""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest
from chartlib import CHARTS, TIMINGS, Rendered, Renderer, scenario_ids, scenario_values


@pytest.fixture(scope="session")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    workdir = tmp_path_factory.mktemp("charts")
    shutil.copytree(
        CHARTS, workdir / "charts", ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
    )
    return Renderer(workdir)


@pytest.fixture(scope="session")
def scenarios(renderer: Renderer) -> dict[tuple[str, str], Rendered]:
    """Every ci/ scenario of every app chart, rendered once per session."""
    started = time.perf_counter()
    result = {
        (chart, name): renderer.render(chart, scenario_values(chart, name)) for chart, name in scenario_ids()
    }
    TIMINGS["render every ci/ scenario"] = time.perf_counter() - started
    return result


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("chart render and validation timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what:<45} {seconds:7.2f} s")
