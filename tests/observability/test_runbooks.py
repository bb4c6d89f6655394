"""Every alert links a runbook section that exists and a dashboard a person can open.

The links are annotations of the generated rules (charts/<svc>/files/rules.yaml): `runbook_url`
points at a section of docs/runbooks.md, `dashboard_url` at the service's Grafana dashboard on the
alert's namespace. promtool expands the dashboard link's template the way Prometheus does.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from obslib import REPO, require_tool

from mesh.observability.rules import GRAFANA_URL, RUNBOOKS_URL, runbook_anchor, title_case
from mesh.registry import load_registry

SERVICES = sorted(load_registry(REPO).services)
RUNBOOKS = REPO / "docs" / "runbooks.md"
PARTS = ("**What it means.**", "**Confirm on the dashboard.**", "**What to do.**")


def alerts(service: str) -> list[dict[str, Any]]:
    rules = yaml.safe_load((REPO / "charts" / service / "files" / "rules.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """Anchor -> text of every `## ` section of docs/runbooks.md."""
    found: dict[str, str] = {}
    current = None
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("## "):
            current = github_anchor(line[3:])
            found[current] = ""
        elif current:
            found[current] += line + "\n"
    return found


def test_the_fleet_has_the_alerts_the_runbooks_cover() -> None:
    assert sum(len(alerts(service)) for service in SERVICES) >= 24


@pytest.mark.parametrize("service", SERVICES)
def test_every_alert_links_an_existing_runbook_section(service: str) -> None:
    available = sections()
    for alert in alerts(service):
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == RUNBOOKS_URL, url
        assert anchor == runbook_anchor(alert["alert"], service)
        assert anchor in available, f"{alert['alert']}: docs/runbooks.md has no section #{anchor}"
        text = available[anchor]
        missing = [part for part in PARTS if part not in text]
        assert not missing, f"docs/runbooks.md#{anchor} lacks {missing}"


def test_runbook_links_name_the_repository_file() -> None:
    assert RUNBOOKS_URL.endswith("/blob/main/docs/runbooks.md")
    assert RUNBOOKS.is_file()


def test_a_missing_section_is_noticed() -> None:
    """The check can fail: an alert kind without a section is not among the anchors."""
    assert "nosuchalert" not in sections()
    assert runbook_anchor("OrdersDatabaseErrors", "orders") == "databaseerrors"
    assert github_anchor("DatabaseErrors") == "databaseerrors"


@pytest.mark.parametrize("service", SERVICES)
def test_every_alert_links_the_services_dashboard(service: str) -> None:
    uid = json.loads((REPO / "charts" / service / "files" / "dashboard.json").read_text())["uid"]
    for alert in alerts(service):
        annotations = alert["annotations"]
        assert annotations["dashboard"] == uid
        assert annotations["dashboard_url"].startswith(f"{GRAFANA_URL}/d/{uid}?var-namespace=")


def down_test(service: str, extra_labels: str, namespace: str | None) -> dict[str, Any]:
    alert = next(a for a in alerts(service) if a["alert"] == f"{title_case(service)}Down")
    expected_labels = {**alert["labels"], **({"namespace": namespace} if namespace else {})}
    annotations = dict(alert["annotations"])
    uid = annotations["dashboard"]
    annotations["dashboard_url"] = f"{GRAFANA_URL}/d/{uid}?var-namespace={namespace or '$__all'}"
    return {
        "interval": "1m",
        "input_series": [{"series": f'up{{job="{service}"{extra_labels}}}', "values": "0x10"}],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": alert["alert"],
                "exp_alerts": [{"exp_labels": expected_labels, "exp_annotations": annotations}],
            }
        ],
    }


@pytest.mark.parametrize("namespace", ["shop", None], ids=["in a namespace", "outside Kubernetes"])
def test_prometheus_expands_the_dashboard_link(tmp_path: Path, namespace: str | None) -> None:
    """What a notification shows: the link with the alert's namespace, or "All" without one."""
    promtool = require_tool("promtool")
    service = SERVICES[0]
    rules = REPO / "charts" / service / "files" / "rules.yaml"
    extra = f', namespace="{namespace}"' if namespace else ""
    spec = tmp_path / "test.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": "1m",
                "tests": [down_test(service, extra, namespace)],
            },
            sort_keys=False,
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
