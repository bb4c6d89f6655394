"""`mesh generate`: every per-service file of the repository, written from mesh.toml and one template each.

What it writes (``make generate``), and what ``mesh generate --check`` compares (``make lint``, the
pre-commit hook):

- ``charts/<service>/``: every file of ``templates/chart/`` (values.yaml with its ``## @param`` lines,
  values.schema.json, Chart.yaml, ci/ scenarios, the thin templates/), the README's Parameters tables
  from the values (:mod:`mesh.chartreadme`, bitnami's generator's output), and ``files/`` (dashboard and
  alert rules, :mod:`mesh.observability`);
- ``.github/workflows/<service>.yml`` (``templates/workflow.yml-tpl``);
- ``skaffold.yaml`` (``templates/skaffold.yaml-tpl``, one ``skaffold-module.yaml-tpl`` per service);
- ``charts/django-service/templates/_contract.tpl`` (``templates/chart-contract.tpl-tpl``): the ports
  and probe and metrics paths of the runtime contract (:mod:`meshcontract`), which every chart's pods use;
- ``k8s/db-bootstrap/`` (:mod:`mesh.generate.k8s_bootstrap`) and the overview dashboard of k8s/monitoring;
- the fleet's table in README.md, between its generated markers (:mod:`mesh.generate.docs`).

A fact is written once, in mesh.toml (a service's port, reads, calls, public paths, …) or in a
template (everything the services share); changing it is one edit and ``make generate``. Every
generated file starts with a one-line header saying so, in its format's comment syntax; JSON has
none, and there the check alone guards the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import meshcontract
from mesh import observability
from mesh.chartreadme import ReadmeError, render_readme
from mesh.generate import docs, k8s_bootstrap
from mesh.generate.facts import service_context
from mesh.generate.templates import render_file, render_tree, source_name, with_header
from mesh.registry import Registry, load_registry

__all__ = ["GenerateError", "Stale", "expected_files", "stale_files", "write_files"]

SKAFFOLD = Path("skaffold.yaml")
CHART_CONTRACT = Path("charts/django-service/templates/_contract.tpl")
WORKFLOWS = Path(".github/workflows")
K8S_SOURCE = "tools/mesh/src/mesh/generate/k8s_bootstrap.py"


class GenerateError(RuntimeError):
    """The files cannot be generated (a template bug, a document without its markers)."""


@dataclass(frozen=True)
class Stale:
    """A file whose content is not what mesh.toml and its template give, or that they no longer give."""

    path: Path
    missing: bool = False
    orphan: bool = False

    def __str__(self) -> str:
        if self.missing:
            return f"{self.path} is missing: run make generate"
        if self.orphan:
            return f"{self.path} was generated for a service mesh.toml no longer has: run make generate"
        what = "differs from mesh.toml and its template (hand-edited or stale)"
        return f"{self.path} {what}: run make generate"


def _chart(name: str, context: dict[str, str]) -> dict[Path, str]:
    chart = Path("charts") / name
    files = {}
    for relative, content, source in render_tree("chart", context):
        files[chart / relative] = with_header(chart / relative, content, source_name(source))
    readme, values = chart / "README.md", chart / "values.yaml"
    try:
        files[readme] = render_readme(files[readme], files[values])
    except ReadmeError as exc:
        raise GenerateError(f"{readme}: {exc}") from None
    return files


def _skaffold(registry: Registry) -> str:
    modules = [render_file("skaffold-module.yaml", service_context(service)) for service in registry]
    text = render_file("skaffold.yaml", {"modules": "---\n" + "\n---\n".join(modules) if modules else ""})
    source = f"{source_name('skaffold.yaml')} (a skaffold-module.yaml-tpl per service)"
    return with_header(SKAFFOLD, text, source)


def _chart_contract() -> str:
    context = {
        "http_port": str(meshcontract.APP_PORT),
        "upstream_socket": meshcontract.UPSTREAM_SOCKET,
        "upstream_socket_dir": os.path.dirname(meshcontract.UPSTREAM_SOCKET),
        "metrics_port": str(meshcontract.METRICS_PORT),
        "sidecar_metrics_port": str(meshcontract.SIDECAR_METRICS_PORT),
        "livez": meshcontract.LIVEZ,
        "readyz": meshcontract.READYZ,
        "metrics": meshcontract.METRICS,
        "sidecar_metrics": meshcontract.SIDECAR_METRICS,
    }
    text = render_file("chart-contract.tpl", context)
    return with_header(CHART_CONTRACT, text, f"{source_name('chart-contract.tpl')} ({meshcontract.SOURCE})")


def expected_files(root: Path, registry: Registry | None = None) -> dict[Path, str]:
    """``{path relative to root: content}`` of every generated file of the fleet ``registry`` describes.

    ``registry`` defaults to ``root``'s mesh.toml; the scaffolder passes the registry it is about to
    write. Documents with a generated block (README.md) are read from ``root``.
    """
    if registry is None:
        registry = load_registry(root)
    files: dict[Path, str] = {}
    for service in registry:
        context = service_context(service)
        files.update(_chart(service.name, context))
        workflow = WORKFLOWS / f"{service.name}.yml"
        text = render_file("workflow.yml", context)
        files[workflow] = with_header(workflow, text, source_name("workflow.yml"))
    files[SKAFFOLD] = _skaffold(registry)
    files[CHART_CONTRACT] = _chart_contract()
    for path, text in k8s_bootstrap.files(registry).items():
        files[path] = with_header(path, text, K8S_SOURCE)
    for path, text in observability.expected_files(registry).items():
        files[path] = text  # headed by mesh.observability itself (the rules) or JSON (the dashboards)
    try:
        files.update(docs.files(root, registry))
    except ValueError as exc:
        raise GenerateError(str(exc)) from None
    return files


def _generated(path: Path) -> bool:
    """Whether ``path`` carries the generated-file header (on its first line, or its second)."""
    with path.open(errors="replace") as lines:
        return any("Generated by `make generate`" in line for line in (lines.readline(), lines.readline()))


def orphans(root: Path, expected: dict[Path, str]) -> list[Path]:
    """Generated files of a service mesh.toml no longer lists: its chart (every file, JSON too) and its
    workflow caller. Only files that carry the header count: a hand-written chart is never touched."""
    found: list[Path] = []
    for chart_yaml in sorted(root.glob("charts/*/Chart.yaml")):
        if chart_yaml.relative_to(root) not in expected and _generated(chart_yaml):
            found += sorted(p.relative_to(root) for p in chart_yaml.parent.rglob("*") if p.is_file())
    for workflow in sorted(root.glob(f"{WORKFLOWS}/*.yml")):
        if workflow.relative_to(root) not in expected and _generated(workflow):
            found.append(workflow.relative_to(root))
    return found


def stale_files(root: Path) -> list[Stale]:
    """Every generated file that is missing, differs from what generation gives, or is left over."""
    expected = expected_files(root)
    found = []
    for relative, content in expected.items():
        path = root / relative
        if not path.is_file():
            found.append(Stale(relative, missing=True))
        elif path.read_text() != content:
            found.append(Stale(relative))
    found += [Stale(relative, orphan=True) for relative in orphans(root, expected)]
    return found


def write_files(root: Path) -> list[Path]:
    """Write every generated file that differs and delete the left-over ones; return those written or
    deleted (relative to ``root``)."""
    expected = expected_files(root)
    changed = []
    for relative, content in expected.items():
        path = root / relative
        if path.is_file() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        changed.append(relative)
    for relative in orphans(root, expected):
        (root / relative).unlink()
        changed.append(relative)
    for chart in sorted(root.glob("charts/*/"), reverse=True):
        _remove_empty(chart)
    return changed


def _remove_empty(directory: Path) -> None:
    """Remove ``directory`` and its subdirectories when no file is left in them (a deleted chart)."""
    for sub in sorted((d for d in directory.rglob("*") if d.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
