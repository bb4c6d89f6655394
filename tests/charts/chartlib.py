"""Helpers of the chart tests: the real Helm v4 engine (helm-python-sdk), renders cached per session.

The charts are copied to a temporary directory before `dependency_update` vendors the library chart,
so the tests never write into the working tree (other engineers share it).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from mesh.testing import tool_missing as mesh_tool_missing

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
LIBRARY = "django-service"
NAMESPACE = "mesh"
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]

TIMINGS: dict[str, float] = {}


def app_chart_names() -> list[str]:
    """Every application chart under charts/ (the ones built on the library chart)."""
    names = []
    for chart_yaml in sorted(CHARTS.glob("*/Chart.yaml")):
        meta = yaml.safe_load(chart_yaml.read_text())
        if meta.get("type", "application") == "application":
            names.append(chart_yaml.parent.name)
    return names


def scenario_ids() -> list[tuple[str, str]]:
    """(chart, scenario) for every `ci/*-values.yaml` of every app chart."""
    return [
        (chart, path.name.removesuffix("-values.yaml"))
        for chart in app_chart_names()
        for path in sorted((CHARTS / chart / "ci").glob("*-values.yaml"))
    ]


def scenario_values(chart: str, scenario: str) -> dict[str, Any]:
    return yaml.safe_load((CHARTS / chart / "ci" / f"{scenario}-values.yaml").read_text()) or {}


def tool_missing(name: str) -> None:
    """A missing tool skips locally but fails in CI (CI=true); see tests/charts/README.md."""
    mesh_tool_missing(f"{name} is not available")


@dataclass
class Rendered:
    """One chart rendered with one set of values: manifests parsed, NOTES kept as text."""

    chart: str
    values: dict[str, Any]
    docs: list[dict[str, Any]]
    notes: str
    files: dict[str, str] = field(default_factory=dict)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.kind(kind)
        assert len(found) == 1, f"{self.chart}: expected one {kind}, got {len(found)}"
        return found[0]

    def configmap(self, name: str) -> dict[str, Any]:
        for doc in self.kind("ConfigMap"):
            if doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"{self.chart}: no ConfigMap {name}")


class Renderer:
    """Loads each app chart once (library vendored offline) and caches renders by values."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._charts: dict[str, helm.Chart] = {}
        self._cache: dict[tuple[str, str], Rendered] = {}

    def chart_dir(self, chart: str) -> Path:
        return self.workdir / "charts" / chart

    def chart(self, chart: str) -> helm.Chart:
        if chart not in self._charts:
            started = time.perf_counter()
            helm.dependency_update(self.chart_dir(chart))
            self._charts[chart] = helm.Chart.load(self.chart_dir(chart))
            TIMINGS["load + dependency_update"] = TIMINGS.get("load + dependency_update", 0) + (
                time.perf_counter() - started
            )
        return self._charts[chart]

    def render(self, chart: str, values: dict[str, Any] | None = None, **kw: Any) -> Rendered:
        values = values or {}
        key = (chart, yaml.safe_dump(values, sort_keys=True) + repr(sorted(kw.items())))
        if key not in self._cache:
            loaded = self.chart(chart)
            started = time.perf_counter()
            out = loaded.render(
                values=values, name=kw.get("name", chart), namespace=NAMESPACE, is_install=True
            )
            TIMINGS["render"] = TIMINGS.get("render", 0) + (time.perf_counter() - started)
            docs, notes = [], ""
            for path, text in out.items():
                if path.endswith("NOTES.txt"):
                    notes = text
                    continue
                docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
            self._cache[key] = Rendered(chart, values, docs, notes, out)
        return self._cache[key]


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) a workload object carries."""
    kind = doc["kind"]
    if kind == "Pod":
        return [doc["spec"]]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
