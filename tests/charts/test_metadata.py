"""What a chart says about itself: the Kubernetes it needs, who maintains it, its Artifact Hub entry,
its README, and one set of labels on every object it renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yamale
import yaml
from chartlib import CHARTS, LIBRARY, NAMESPACE, Rendered, Renderer, app_chart_names, tool_missing
from helm_python import _native
from readmes import ToolUnavailable, generate

from mesh.chartreadme import HEADING, render_readme

KUBE_VERSION = ">=1.29.0-0"
CT_SCHEMA = Path(__file__).parent / "schemas" / "ct-chart_schema.yaml"
OWNER = "django-mesh"
# https://artifacthub.io/docs/topics/annotations/helm/ (supported values of artifacthub.io/category)
ARTIFACTHUB_CATEGORIES = {
    "ai-machine-learning",
    "database",
    "integration-delivery",
    "monitoring-logging",
    "networking",
    "security",
    "storage",
    "streaming-messaging",
}
ALL_CHARTS = [LIBRARY, *app_chart_names()]


def chart_yaml(chart: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    return data


# --- Kubernetes version ------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_every_chart_declares_the_kubernetes_it_needs(chart: str) -> None:
    """Native sidecar containers and matchLabelKeys need 1.29; Helm refuses to install on older."""
    assert chart_yaml(chart)["kubeVersion"] == KUBE_VERSION


def render_for(renderer: Renderer, chart: str, kube_version: str) -> dict[str, str]:
    """The engine's render with a target Kubernetes version, as `helm template --kube-version` does.

    helm-python-sdk's Chart.render does not expose the option its native call takes (`kube_version`,
    the same option its lint takes), so this calls the native function with it.
    """
    loaded = renderer.chart(chart)
    options = {"name": chart, "namespace": NAMESPACE, "is_install": True, "kube_version": kube_version}
    rendered: dict[str, str] = json.loads(
        _native.call_string("helm_render", loaded._raw(), None, json.dumps(options))
    )
    return rendered


@pytest.mark.parametrize("chart", app_chart_names())
def test_rendering_for_kubernetes_1_28_fails_and_says_why(renderer: Renderer, chart: str) -> None:
    with pytest.raises(helm.HelmRenderError) as failure:
        render_for(renderer, chart, "v1.28.15")
    message = str(failure.value)
    assert f"{chart} needs Kubernetes >= 1.29" in message
    assert "native sidecar containers" in message
    assert "the target is v1.28.15" in message


@pytest.mark.parametrize("chart", app_chart_names())
def test_rendering_for_kubernetes_1_29_works(renderer: Renderer, chart: str) -> None:
    manifests = render_for(renderer, chart, "v1.29.0")
    assert any("kind: Deployment" in text for text in manifests.values())


# --- chart-testing and Artifact Hub --------------------------------------------------------------------


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_chart_yaml_passes_chart_testings_schema(chart: str) -> None:
    """`ct lint` validates Chart.yaml with yamale against this schema (strict: no unknown key)."""
    schema = yamale.make_schema(str(CT_SCHEMA))
    data = yamale.make_data(str(CHARTS / chart / "Chart.yaml"))
    yamale.validate(schema, data, strict=True)


def test_chart_testings_schema_rejects_a_maintainer_without_a_name() -> None:
    schema = yamale.make_schema(str(CT_SCHEMA))
    data = yamale.make_data(
        content="name: x\nversion: 0.1.0\napiVersion: v2\nmaintainers:\n  - email: a@b.c\n"
    )
    with pytest.raises(yamale.YamaleError, match="maintainers.0.name"):
        yamale.validate(schema, data, strict=True)


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_maintainers_have_a_name_and_a_way_to_reach_them(chart: str) -> None:
    maintainers = chart_yaml(chart)["maintainers"]
    assert maintainers
    for maintainer in maintainers:
        # ct lint's --validate-maintainers checks the name is a GitHub account: the owner of the repo.
        assert maintainer["name"] == OWNER
        assert maintainer.get("email") or str(maintainer.get("url", "")).startswith("https://")


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_artifact_hub_annotations(chart: str) -> None:
    annotations = chart_yaml(chart)["annotations"]
    assert all(isinstance(value, str) for value in annotations.values()), "annotation values are strings"
    assert annotations["artifacthub.io/category"] in ARTIFACTHUB_CATEGORIES
    assert annotations["artifacthub.io/prerelease"] in {"true", "false"}
    links = yaml.safe_load(annotations["artifacthub.io/links"])
    assert {link["name"] for link in links} >= {"source", "runbooks"}
    assert all(link["url"].startswith("https://github.com/django-mesh/django-mesh") for link in links)


def images(rendered: Rendered) -> set[str]:
    return {
        container["image"]
        for doc in rendered.docs
        if doc["kind"] in {"Deployment", "Job"}
        for container in [
            *doc["spec"]["template"]["spec"].get("initContainers", []),
            *doc["spec"]["template"]["spec"]["containers"],
        ]
    }


@pytest.mark.parametrize("chart", app_chart_names())
def test_artifact_hub_lists_the_images_the_chart_runs(renderer: Renderer, chart: str) -> None:
    listed = yaml.safe_load(chart_yaml(chart)["annotations"]["artifacthub.io/images"])
    assert {entry["image"] for entry in listed} == images(renderer.render(chart))


# --- labels ---------------------------------------------------------------------------------------------


SHARED_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


def labelled(rendered: Rendered) -> list[tuple[str, dict[str, str]]]:
    """(where, labels) of every object and every pod template."""
    found = []
    for doc in rendered.docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        found.append((where, doc["metadata"].get("labels", {})))
        template = doc.get("spec", {}).get("template")
        if isinstance(template, dict) and "metadata" in template:
            found.append((f"{where} pod", template["metadata"].get("labels", {})))
    return found


def test_every_object_carries_the_same_labels(scenarios: dict[tuple[str, str], Rendered]) -> None:
    for (chart, scenario), rendered in scenarios.items():
        sets = {where: {k: labels.get(k) for k in SHARED_LABELS} for where, labels in labelled(rendered)}
        first = next(iter(sets.values()))
        assert first["app.kubernetes.io/part-of"] == "django-mesh"
        assert first["app.kubernetes.io/instance"] == chart
        different = {where: labels for where, labels in sets.items() if labels != first}
        assert not different, f"{chart}/{scenario}: labels differ from {first}: {different}"
        for where, labels in labelled(rendered):
            # Only a pod the Service must not select (the migration Job's) goes without a name.
            if "app.kubernetes.io/name" not in labels:
                assert labels.get("app.kubernetes.io/component") == "migration", f"{chart}: {where}"


# --- README -------------------------------------------------------------------------------------------


def header(readme: str) -> str:
    return readme[: readme.index(f"{HEADING}\n") + len(HEADING) + 1]


@pytest.mark.parametrize("chart", app_chart_names())
def test_readme_is_the_generators_output_for_the_current_values(tmp_path: Path, chart: str) -> None:
    """bitnami's readme-generator-for-helm, run on a copy, changes nothing in the committed README."""
    readme = (CHARTS / chart / "README.md").read_text()
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    try:
        result = generate(CHARTS / chart / "values.yaml", copy)
    except ToolUnavailable as exc:
        tool_missing(f"readme-generator-for-helm ({exc})")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert copy.read_text() == readme, f"charts/{chart}/README.md is stale: run `make generate`"
    # From an empty Parameters section too: the tables hold nothing the values do not.
    copy.write_text(header(readme))
    assert generate(CHARTS / chart / "values.yaml", copy).returncode == 0
    assert copy.read_text() == readme


@pytest.mark.parametrize("chart", app_chart_names())
def test_the_scaffolders_readme_writer_matches_the_generator(chart: str) -> None:
    """mesh new-service writes a new chart's README without node: its output must be the tool's."""
    readme = (CHARTS / chart / "README.md").read_text()
    assert render_readme(header(readme), (CHARTS / chart / "values.yaml").read_text()) == readme


def test_readme_generator_rejects_an_undocumented_key(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("## @section S\n## @param a A\na: 1\nb: 2\n")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Parameters\n")
    try:
        result = generate(values, readme)
    except ToolUnavailable as exc:
        tool_missing(f"readme-generator-for-helm ({exc})")
    assert result.returncode != 0
    assert "Missing metadata for key: b" in result.stdout


def test_readmes_say_how_to_install_and_where_the_runbooks_are() -> None:
    for chart in app_chart_names():
        readme = (CHARTS / chart / "README.md").read_text()
        assert f"helm install {chart} charts/{chart}" in readme
        assert "docs/runbooks.md" in readme
        assert "| `image.repository`" in readme


# --- alert links ----------------------------------------------------------------------------------------


def alert_annotations(rendered: Rendered) -> list[dict[str, str]]:
    rule = rendered.one("PrometheusRule")
    return [r["annotations"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


@pytest.mark.parametrize("chart", app_chart_names())
def test_alerts_link_the_grafana_of_monitoring_grafana_url(renderer: Renderer, chart: str) -> None:
    base = "https://grafana.example.com/grafana"
    values = {"monitoring": {"prometheusRule": {"enabled": True}, "grafanaUrl": f"{base}/"}}
    annotations = alert_annotations(renderer.render(chart, values))
    assert len(annotations) >= 8
    for annotation in annotations:
        assert annotation["dashboard_url"].startswith(f"{base}/d/mesh-{chart}?var-namespace="), annotation
        assert "/docs/runbooks.md#" in annotation["runbook_url"]


@pytest.mark.parametrize("chart", app_chart_names())
def test_without_grafana_url_alerts_keep_the_generated_link(renderer: Renderer, chart: str) -> None:
    rules = yaml.safe_load((CHARTS / chart / "files" / "rules.yaml").read_text())
    generated = [r["annotations"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    rendered = alert_annotations(
        renderer.render(chart, {"monitoring": {"prometheusRule": {"enabled": True}}})
    )
    assert rendered == generated


@pytest.mark.parametrize("url", ["grafana.example.com", "ftp://grafana", "https://a b"])
def test_schema_rejects_a_grafana_url_that_is_not_one(renderer: Renderer, url: str) -> None:
    with pytest.raises(helm.HelmError, match="grafanaUrl"):
        renderer.render("orders", {"monitoring": {"grafanaUrl": url}})
