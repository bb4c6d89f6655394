"""values.yaml is documented, values.schema.json is strict, and bad values fail with a clear message."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml
from chartlib import CHARTS, Renderer, app_chart_names

# Keys whose content is free-form by design (Kubernetes objects or Helm's own additions).
OPAQUE = {"affinity", "django-service", "global", "valueFrom"}


def key_paths(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    if isinstance(values, dict):
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else key
            out.append((path, value))
            out += key_paths(value, path)
    return out


def documented(values: dict[str, Any], params: set[str]) -> list[str]:
    """Keys neither documented themselves nor inside a documented value, nor groups of documented keys."""
    missing = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if path in params:
                continue
            if isinstance(value, dict) and value:
                walk(value, path)  # a group: each of its keys needs its own @param
            else:
                missing.append(path)

    walk(values, "")
    return missing


@pytest.mark.parametrize("chart", app_chart_names())
def test_values_file_is_documented(chart: str) -> None:
    text = (CHARTS / chart / "values.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"
    params = set(re.findall(r"^\s*## @param (\S+) \S", text, re.MULTILINE))
    values = yaml.safe_load(text)
    assert not documented(values, params), "keys without ## @param"
    existing = {path for path, _ in key_paths(values)}
    assert not params - existing, "## @param for keys that do not exist"


def strictness_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    problems = []
    if schema.get("type") == "object" and path.rsplit("/", 1)[-1] not in OPAQUE:
        if "properties" in schema and schema.get("additionalProperties") is not False:
            problems.append(f"{path or '/'}: additionalProperties is not false")
        if (
            "properties" not in schema
            and "additionalProperties" not in schema
            and path.rsplit("/", 1)[-1] not in {"tolerations", "extraEgress", "items"}
        ):
            problems.append(f"{path or '/'}: object without properties or additionalProperties")
    for key, sub in schema.get("properties", {}).items():
        problems += strictness_problems(sub, f"{path}/{key}")
    for key, sub in schema.get("definitions", {}).items():
        problems += strictness_problems(sub, f"#{key}")
    if isinstance(schema.get("items"), dict):
        problems += strictness_problems(schema["items"], f"{path}/items")
    return problems


@pytest.mark.parametrize("chart", app_chart_names())
def test_schema_is_strict(chart: str) -> None:
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    assert not strictness_problems(schema)
    # Helm adds the library chart's values under its name, and `global`.
    assert {"django-service", "global"} <= set(schema["properties"])


def test_app_charts_share_one_schema_and_one_values_layout() -> None:
    """The app charts are generated from one template: no chart drifts from the others."""
    charts = app_chart_names()
    schemas = {c: (CHARTS / c / "values.schema.json").read_text() for c in charts}
    assert len(set(schemas.values())) == 1, "values.schema.json differs between app charts"
    layouts = {
        c: sorted(
            p
            for p, _ in key_paths(yaml.safe_load((CHARTS / c / "values.yaml").read_text()))
            if not p.startswith(("auth.publicPaths", "mesh.calls", "mesh.reads"))
        )
        for c in charts
    }
    first = layouts[charts[0]]
    for chart, layout in layouts.items():
        assert layout == first, f"{chart}/values.yaml has a different set of keys"


@pytest.mark.parametrize("chart", app_chart_names())
def test_defaults_pass_the_schema(renderer: Renderer, chart: str) -> None:
    renderer.chart(chart).validate_schema({})


BAD_VALUES = [
    ({"replicaCount": 0}, ["/replicaCount", "minimum"]),
    ({"replicas": 2}, ["additional properties", "replicas"]),
    ({"auth": {"mode": "both"}}, ["/auth/mode", "sidecar", "inprocess"]),
    ({"auth": {"sidecar": {"engine": "envoy"}}}, ["/auth/sidecar/engine", "python", "haproxy"]),
    ({"image": {"tag": "latest"}}, ["/image/tag"]),
    ({"gunicorn": {"timeout": "30"}}, ["/gunicorn/timeout", "integer"]),
    (
        {"ingress": {"hosts": [{"host": "x.example.com", "paths": [{"path": "/", "pathType": "Any"}]}]}},
        ["pathType"],
    ),
    ({"resources": {"limits": {"memory": "lots"}}}, ["/resources/limits/memory", "pattern"]),
    ({"env": {"lower_case": "x"}}, ["lower_case", "pattern"]),
    ({"monitoring": {"releaseLabel": "has space"}}, ["/monitoring/releaseLabel"]),
]


@pytest.mark.parametrize(("values", "expected"), BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_schema_rejects_bad_values_clearly(
    renderer: Renderer, values: dict[str, Any], expected: list[str]
) -> None:
    chart = renderer.chart("identity")
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    for fragment in expected:
        assert fragment in str(raised.value)
    # helm install/template apply the same schema before rendering
    with pytest.raises(helm.HelmError):
        chart.render(values=values, name="identity", namespace="mesh")


CROSS_CHECKS = [
    ({"gunicorn": {"gracefulTimeout": 26}}, "must be below terminationGracePeriodSeconds"),
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, "minReplicas (5)"),
    ({"auth": {"clientId": "identity"}}, "set secrets.clientSecretKey"),
    ({"ingress": {"enabled": True}}, "ingress.hosts"),
    ({"env": {"SECRET_KEY": "oops"}}, "env.SECRET_KEY"),
]


@pytest.mark.parametrize(("values", "expected"), CROSS_CHECKS, ids=[str(v) for v, _ in CROSS_CHECKS])
def test_render_rejects_inconsistent_values(
    renderer: Renderer, values: dict[str, Any], expected: str
) -> None:
    chart = renderer.chart("identity")
    chart.validate_schema(values)  # each value alone is fine …
    with pytest.raises(helm.HelmRenderError) as raised:  # … together they are not
        chart.render(values=values, name="identity", namespace="mesh")
    assert expected in str(raised.value)
