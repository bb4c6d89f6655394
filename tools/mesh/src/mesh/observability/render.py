"""PNG previews of the generated dashboards, drawn from a real Prometheus watching a real fleet.

``make dashboards`` (``python -m mesh.observability render``): the fleet of `mesh.toml` on the embedded
PostgreSQL, a local Prometheus with the charts' rules, a minute of mixed traffic, then every panel's
queries over that minute drawn with matplotlib where Grafana would put them. A user sees what the
charts install before running Grafana at all.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mesh.bootstrap import drop_database
from mesh.fleet import Fleet
from mesh.local import admin_url, embedded_postgres
from mesh.observability.files import OVERVIEW_JSON
from mesh.observability.prometheus import LocalPrometheus
from mesh.observability.workload import drive
from mesh.registry import load_registry

__all__ = ["draw_dashboard", "render_previews"]

STEP = 2.0
RATE_INTERVAL = "15s"
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Grafana's dark theme, near enough.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]


def _say(message: str) -> None:
    print(f"[dashboards] {message}", flush=True)


def _legend(template: str, labels: dict[str, str]) -> str:
    text = _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template).strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def _substitute(expr: str, service: str, seconds: float) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", f"{max(int(seconds), 60)}s")
        .replace("$namespace", ".*")
        .replace("$service", service)
    )


def draw_dashboard(
    dashboard: dict[str, Any],
    series_of: Callable[[str, str], list[tuple[str, list[float], list[float]]]],
    out: Path,
) -> Path:
    """Draw ``dashboard``'s panels at their grid positions; ``series_of(expr, legend)`` gives the data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit = 0.42  # inches per grid row
    fig = plt.figure(figsize=(22, height * unit + 0.8), facecolor=BACKGROUND)
    top = 1 - 0.8 / (height * unit + 0.8)
    fig.text(0.01, 1 - 0.35 / (height * unit + 0.8), dashboard["title"], color=TEXT, fontsize=18, va="center")
    for panel in panels:
        pos = panel["gridPos"]
        left, width = pos["x"] / 24 + 0.004, pos["w"] / 24 - 0.008
        y_top = top * (1 - pos["y"] / height)
        h = top * pos["h"] / height
        if panel["type"] == "row":
            fig.text(left, y_top - h / 2, panel["title"], color=TEXT, fontsize=13, weight="bold", va="center")
            continue
        # Room on the left for the tick labels, which matplotlib draws outside the axes.
        ax = fig.add_axes((left + 0.025, y_top - h + 0.012, width - 0.03, h - 0.03), facecolor=PANEL)
        ax.set_title(panel["title"], color=TEXT, fontsize=10, loc="left")
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.tick_params(colors=TEXT, labelsize=7)
        ax.grid(color=GRID, linewidth=0.5)
        lines = [s for target in panel["targets"] for s in series_of(target["expr"], target["legendFormat"])]
        if panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            values = [f"{label}: {ys[-1]:.3g}" for label, _, ys in lines if ys]
            ax.text(
                0.5,
                0.45,
                "\n".join(values[:4]) or "no data",
                color=PALETTE[0],
                fontsize=16,
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        if not lines:
            ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        for index, (label, xs, ys) in enumerate(lines[:12]):
            ax.plot(xs, ys, color=PALETTE[index % len(PALETTE)], linewidth=1.2, label=label)
        if lines:
            ax.legend(fontsize=6, loc="upper left", facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=2)
        ax.set_xlabel("seconds", color=TEXT, fontsize=7)
        unit_name = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if unit_name and unit_name != "short":
            ax.set_ylabel(unit_name, color=TEXT, fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70, facecolor=BACKGROUND)
    plt.close(fig)
    return out


def _traffic(fleet: Fleet, seconds: float) -> None:
    """The mixed workload in a loop, with bursts of concurrent reads so latency and in-flight move."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30.0) as client, ThreadPoolExecutor(4) as pool:
        while time.monotonic() < deadline:
            drive(fleet, client=client)
            urls = [f"{fleet.url(s.name)}/api/v1/openapi.json" for s in fleet.services]
            list(pool.map(client.get, urls * 5))
            time.sleep(0.5)


def render_previews(root: Path, out: Path, seconds: float = 60.0, only: tuple[str, ...] = ()) -> list[Path]:
    """Run the fleet and a Prometheus, drive traffic for ``seconds``, draw every dashboard into ``out``."""
    registry = load_registry(root)
    url, started_db = admin_url(root)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mesh-dashboards-") as tmp:
        run = Path(tmp)
        fleet = Fleet.on_free_ports(
            registry,
            url,
            run,
            database_prefix="dashboards",
            only=only,
            # See tests/observability/test_proof.py: identity's sidecar retries its first JWKS fetch.
            extra_env={"MESHAUTH_JWKS_MIN_REFRESH_INTERVAL": "2"},
        )
        rules = [root / "charts" / s.name / "files" / "rules.yaml" for s in fleet.services]
        prometheus = LocalPrometheus(fleet, run / "prometheus", rule_files=rules)
        try:
            _say("starting the fleet")
            fleet.up(progress=_say, seed=True)
            _say("starting Prometheus")
            prometheus.start()
            prometheus.wait_for_targets()
            prometheus.wait_for_jobs(
                'meshauth_sidecar_jwks_refresh_total{outcome="success"} > 0', {s.name for s in fleet.services}
            )
            start = time.time()
            _say(f"driving traffic for {seconds:.0f} s")
            _traffic(fleet, seconds)
            time.sleep(3)
            end = time.time()

            def series_for(service: str) -> Callable[[str, str], list[tuple[str, list[float], list[float]]]]:
                def series(expr: str, legend: str) -> list[tuple[str, list[float], list[float]]]:
                    result = prometheus.query_range(_substitute(expr, service, end - start), start, end, STEP)
                    return [
                        (
                            _legend(legend, s["metric"]),
                            [float(t) - start for t, _ in s["values"]],
                            [float(v) for _, v in s["values"]],
                        )
                        for s in result
                    ]

                return series

            for service in fleet.services:
                dashboard = json.loads((root / "charts" / service.name / "files/dashboard.json").read_text())
                written.append(
                    draw_dashboard(dashboard, series_for(service.name), out / f"{service.name}.png")
                )
            overview = json.loads((root / OVERVIEW_JSON).read_text())
            everyone = "|".join(s.name for s in fleet.services)
            written.append(draw_dashboard(overview, series_for(everyone), out / "overview.png"))
        finally:
            prometheus.stop()
            fleet.stop()
            drop_database(url, fleet.database)
            if started_db:
                embedded_postgres(root).stop()
    return written
