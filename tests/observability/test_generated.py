"""The committed dashboards and rules are exactly what the generator writes, for every service of
`mesh.toml`, and they have the shape Grafana and the charts expect."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from obslib import REPO

from mesh.observability import (
    dashboard_queries,
    generate_service_dashboard,
    generate_service_rules,
    stale_files,
)
from mesh.observability.files import OVERVIEW_CONFIGMAP, OVERVIEW_JSON, service_files
from mesh.registry import load_registry


def test_committed_files_match_the_generator() -> None:
    stale = stale_files(REPO)
    assert not stale, f"stale generated files {stale}: run make generate"


def test_every_service_ships_a_dashboard_and_rules() -> None:
    registry = load_registry(REPO)
    for service in registry:
        files = REPO / "charts" / service.name / "files"
        dashboard = json.loads((files / "dashboard.json").read_text())
        assert dashboard["uid"] == f"mesh-{service.name}"
        rules = yaml.safe_load((files / "rules.yaml").read_text())
        assert rules == generate_service_rules(service.name)
        titles = {title for title, _ in dashboard_queries(dashboard)}
        assert ("Outbound calls by target and outcome" in titles) == bool(service.calls)


def test_overview_configmap_carries_the_overview_json() -> None:
    configmap = yaml.safe_load((REPO / OVERVIEW_CONFIGMAP).read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = json.loads(configmap["data"]["mesh-overview.json"])
    assert embedded == json.loads((REPO / OVERVIEW_JSON).read_text())
    assert embedded["uid"] == "mesh-overview"


def test_a_new_service_gets_everything_without_a_hand_edit() -> None:
    """What the scaffolder relies on: any name works, and nothing names an existing service."""
    dashboard = generate_service_dashboard("pay-outs")
    rules = generate_service_rules("pay-outs")
    text = json.dumps(dashboard) + json.dumps(rules)
    for other in load_registry(REPO).services:
        # identity is named in texts as the token issuer; no selector or link may name another job.
        assert f'job=\\"{other}\\"' not in text
        assert f"mesh-{other}" not in text
    assert 'job=\\"pay-outs\\"' in text
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert "PayOutsAvailabilityBudgetBurnFast" in alerts
    assert set(service_files("pay-outs")) == {
        Path("charts/pay-outs/files/dashboard.json"),
        Path("charts/pay-outs/files/rules.yaml"),
    }


def test_panel_ids_are_unique_and_every_panel_has_a_query() -> None:
    registry = load_registry(REPO)
    for path in [REPO / "charts" / s.name / "files/dashboard.json" for s in registry] + [
        REPO / OVERVIEW_JSON
    ]:
        dashboard = json.loads(path.read_text())
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], f"{path}: {panel['title']} has no query"
                assert all(t["expr"].strip() for t in panel["targets"])
