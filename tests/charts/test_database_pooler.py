"""database.pooler: the pods reach PostgreSQL through PgBouncer in transaction mode, the migration Job
goes direct (its advisory lock needs a session), and a pooled URL for the migrations is refused."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
from chartlib import Rendered, Renderer, app_chart_names

POOLED = {"database": {"pooler": {"enabled": True}}}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def app_container(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "app")


def migration_container(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("Job")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("chart", app_chart_names())
def test_pooled_pods_use_the_pooler_and_the_migration_job_goes_direct(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, POOLED)
    config = rendered.configmap(rendered.one("Deployment")["metadata"]["name"])["data"]
    assert config["DATABASE_POOLER"] == "transaction"
    app = env_of(app_container(rendered))
    assert app["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"
    job = env_of(migration_container(rendered))
    assert job["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DIRECT_DATABASE_URL"
    assert "DATABASE_POOLER" not in job


@pytest.mark.parametrize("chart", app_chart_names())
def test_without_a_pooler_nothing_changes(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {})
    config = rendered.configmap(rendered.one("Deployment")["metadata"]["name"])["data"]
    assert "DATABASE_POOLER" not in config
    job = env_of(migration_container(rendered))
    assert job["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL"


def test_the_production_scenario_is_pooled(scenarios: dict[tuple[str, str], Rendered]) -> None:
    for chart in app_chart_names():
        rendered = scenarios[(chart, "production")]
        config = rendered.configmap(rendered.one("Deployment")["metadata"]["name"])["data"]
        assert config["DATABASE_POOLER"] == "transaction", chart


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"database": {"pooler": {"enabled": True}}, "secrets": {"directDatabaseUrlKey": "DATABASE_URL"}},
            "secrets.directDatabaseUrlKey must name a direct database URL",
        ),
        ({"env": {"DATABASE_POOLER": "transaction"}}, "env.DATABASE_POOLER"),
        ({"database": {"pooler": {"enabled": True, "poolSize": 0}}}, "poolSize"),
    ],
)
def test_bad_pooler_values_are_refused(renderer: Renderer, values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        renderer.render("orders", values)
