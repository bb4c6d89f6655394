"""`mesh generate`: every per-service file of the repository, written from mesh.toml and one template each.

What it writes (``make generate``), and what ``mesh generate --check`` compares (``make lint``, the
pre-commit hook):

- ``charts/<service>/``: every file of ``templates/chart/`` (values.yaml with its ``## @param`` lines,
  values.schema.json, Chart.yaml, ci/ scenarios, the thin templates/), the README's Parameters tables
  from the values (:mod:`mesh.chartreadme`, bitnami's generator's output), and ``files/`` (dashboard and
  alert rules, :mod:`mesh.observability`);
- ``.github/workflows/<service>.yml`` (``templates/workflow.yml-tpl``);
- ``skaffold.yaml`` (``templates/skaffold.yaml-tpl``, one ``skaffold-module.yaml-tpl`` per service);
- ``k8s/db-bootstrap/`` (:mod:`mesh.generate.k8s_bootstrap`) and the overview dashboard of k8s/monitoring;
- the fleet's table in README.md, between its generated markers (:mod:`mesh.generate.docs`).

A fact is written once, in mesh.toml (a service's port, reads, calls, public paths, …) or in a
template (everything the services share); changing it is one edit and ``make generate``. Every
generated file starts with a one-line header saying so, in its format's comment syntax; JSON has
none, and there the check alone guards the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh import observability
from mesh.chartreadme import ReadmeError, render_readme
from mesh.generate import docs, k8s_bootstrap
from mesh.generate.facts import service_context
from mesh.generate.templates import render_file, render_tree, source_name, with_header
from mesh.registry import Registry, load_registry

__all__ = ["GenerateError", "Stale", "expected_files", "stale_files", "write_files"]

SKAFFOLD = Path("skaffold.yaml")
WORKFLOWS = Path(".github/workflows")
OBSERVABILITY_SOURCE = "tools/mesh/src/mesh/observability"
K8S_SOURCE = "tools/mesh/src/mesh/generate/k8s_bootstrap.py"


class GenerateError(RuntimeError):
    """The files cannot be generated (a template bug, a document without its markers)."""


@dataclass(frozen=True)
class Stale:
    """A file whose content is not what mesh.toml and its template give."""

    path: Path
    missing: bool

    def __str__(self) -> str:
        what = (
            "is missing" if self.missing else "differs from mesh.toml and its template (hand-edited or stale)"
        )
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


def expected_files(root: Path, registry: Registry | None = None) -> dict[Path, str]:
    """``{path relative to root: content}`` of every generated file of the fleet ``registry`` describes.

    ``registry`` defaults to ``root``'s mesh.toml; the scaffolder passes the registry it is about to
    write. Documents with a generated block (README.md) are read from ``root``.
    """
    registry = registry or load_registry(root)
    files: dict[Path, str] = {}
    for service in registry:
        context = service_context(service)
        files.update(_chart(service.name, context))
        workflow = WORKFLOWS / f"{service.name}.yml"
        text = render_file("workflow.yml", context)
        files[workflow] = with_header(workflow, text, source_name("workflow.yml"))
    files[SKAFFOLD] = _skaffold(registry)
    for path, text in k8s_bootstrap.files(registry).items():
        files[path] = with_header(path, text, K8S_SOURCE)
    for path, text in observability.expected_files(registry).items():
        files[path] = text  # headed by mesh.observability itself (the rules) or JSON (the dashboards)
    try:
        files.update(docs.files(root, registry))
    except ValueError as exc:
        raise GenerateError(str(exc)) from None
    return files


def stale_files(root: Path) -> list[Stale]:
    """Every generated file whose committed content differs from what generation gives, or is missing."""
    found = []
    for relative, content in expected_files(root).items():
        path = root / relative
        if not path.is_file():
            found.append(Stale(relative, missing=True))
        elif path.read_text() != content:
            found.append(Stale(relative, missing=False))
    return found


def write_files(root: Path) -> list[Path]:
    """Write every generated file that differs; return those written (relative to ``root``)."""
    written = []
    for relative, content in expected_files(root).items():
        path = root / relative
        if path.is_file() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(relative)
    return written
