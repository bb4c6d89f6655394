"""Proof on real data: the fleet of `mesh.toml` under gunicorn behind its sidecars, a real Prometheus
scraping it every second with the charts' rules loaded, a short mixed workload; then every panel
query of every generated dashboard and every recording rule must return data, and request counts
must be exact with four gunicorn workers that recycle under load.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from obslib import REPO, require_tool

from mesh.bootstrap import drop_database
from mesh.fleet import Fleet
from mesh.observability.dashboards import dashboard_queries
from mesh.observability.files import OVERVIEW_JSON
from mesh.observability.prometheus import LocalPrometheus
from mesh.observability.workload import Workload, drive, summary
from mesh.registry import Registry

# Stand-ins for Grafana's variables: every namespace (none locally), a window that covers the run.
RATE_INTERVAL = "1m"
RANGE = "5m"
COUNTED_REQUESTS = 200
COUNT_WORKERS = 4


@dataclass
class Observed:
    fleet: Fleet
    prometheus: LocalPrometheus
    workload: Workload
    counted: str  # the service that runs four workers recycling every few requests


def substitute(expr: str, service: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("$namespace", ".*")
        .replace("$service", service)
    )


def chart_rule_groups(registry: Registry, directory: Path) -> list[Path]:
    """The ``groups`` of every chart's rules file, as Prometheus rule files."""
    paths = []
    for service in registry:
        groups = yaml.safe_load((REPO / "charts" / service.name / "files/rules.yaml").read_text())["groups"]
        path = directory / f"{service.name}.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def observed(
    mesh_registry: Registry, admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    binary = require_tool("prometheus")
    run_dir = tmp_path_factory.mktemp("observed")
    counted = mesh_registry.services[next(iter(mesh_registry.services))].name
    fleet = Fleet(
        registry=mesh_registry,
        admin_url=admin_url,
        database=f"test_obs_{uuid.uuid4().hex[:8]}",
        run_dir=run_dir,
        mode="sidecar",
        fixed_ports=False,
        # identity's sidecar starts before its app answers, so its first JWKS fetch fails; the default
        # 30 s before a retry would be most of this test's run.
        extra_env={"MESHAUTH_JWKS_MIN_REFRESH_INTERVAL": "2"},
        # Workers that recycle every 40 requests: counts must neither reset nor multiply when they do.
        service_env={
            counted: {
                "GUNICORN_WORKERS": str(COUNT_WORKERS),
                "GUNICORN_MAX_REQUESTS": "40",
                "GUNICORN_MAX_REQUESTS_JITTER": "0",
            }
        },
    )
    prometheus = LocalPrometheus(
        fleet, run_dir / "prometheus", rule_files=chart_rule_groups(mesh_registry, run_dir), binary=binary
    )
    try:
        fleet.up(seed=True)
        prometheus.start()
        prometheus.wait_for_targets()
        prometheus.wait_for_jobs(
            'meshauth_sidecar_jwks_refresh_total{outcome="success"} > 0', {s.name for s in fleet.services}
        )
        workload = drive(fleet, rounds=2)
        # Two more scrapes at least, so every new series has the two samples rate() needs.
        time.sleep(3)
        yield Observed(fleet, prometheus, workload, counted)
    finally:
        prometheus.stop()
        fleet.stop()
        drop_database(admin_url, fleet.database)


def test_the_workload_was_mixed(observed: Observed) -> None:
    """Good requests, client errors and refused tokens reached every service."""
    for service in observed.fleet.services:
        codes = observed.workload.statuses.get(service.name, {})
        assert any(200 <= c < 300 for c in codes), summary(observed.workload)
        assert any(400 <= c < 500 for c in codes), summary(observed.workload)
        assert not any(c >= 500 for c in codes), summary(observed.workload)
    names = {s.name for s in observed.fleet.services}
    if "identity" in names:
        assert observed.workload.token, "no user could log in at identity"
    if {"orders", "catalog"} <= names:
        assert 201 in observed.workload.statuses["orders"], f"no order placed: {summary(observed.workload)}"


def test_every_panel_query_returns_data(observed: Observed) -> None:
    dashboards = [
        (s.name, REPO / "charts" / s.name / "files/dashboard.json") for s in observed.fleet.services
    ]
    everyone = "|".join(s.name for s in observed.fleet.services)
    dashboards.append((everyone, REPO / OVERVIEW_JSON))
    empty, checked = [], 0
    for service, path in dashboards:
        dashboard = json.loads(path.read_text())
        for title, expr in dashboard_queries(dashboard):
            query = substitute(expr, service)
            assert "$" not in query.replace("${1}", "").replace("$1", ""), query
            checked += 1
            if not observed.prometheus.query(query):
                empty.append(f"{dashboard['title']} / {title}: {query}")
    assert checked > 30
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_every_recording_rule_returns_data(observed: Observed) -> None:
    empty, checked = [], 0
    for service in observed.fleet.services:
        rules = yaml.safe_load((REPO / "charts" / service.name / "files/rules.yaml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    checked += 1
                    if not observed.prometheus.query(f'{rule["record"]}{{job="{service.name}"}}'):
                        empty.append(f"{service.name}: {rule['record']}")
    assert checked >= 20 * len(observed.fleet.services)
    assert not empty, "recording rules without data:\n" + "\n".join(empty)


def test_every_rule_evaluates_without_error(observed: Observed) -> None:
    response = httpx.get(f"{observed.prometheus.url}/api/v1/rules", timeout=10)
    groups = response.json()["data"]["groups"]
    assert {g["name"].split(".")[0] for g in groups} == {s.name for s in observed.fleet.services}
    broken = [
        f"{g['name']}/{r.get('name')}: {r['lastError']}"
        for g in groups
        for r in g["rules"]
        if r.get("lastError")
    ]
    assert not broken, broken
    assert all(r["health"] == "ok" for g in groups for r in g["rules"])


def test_probes_and_scrapes_are_not_measured(observed: Observed) -> None:
    """Prometheus scraped /metrics and the fleet polled /readyz; neither is in the request metrics."""
    probes = 'http_server_request_duration_seconds_count{http_route=~".*(livez|readyz|metrics).*"}'
    assert observed.prometheus.query(probes) == []
    scraped = observed.prometheus.query('sum(scrape_samples_scraped{endpoint="app"}) > 0')
    assert scraped


def test_each_series_comes_from_one_place(observed: Observed) -> None:
    """The sidecar's series only from /metrics/sidecar; no per-process (pid) series anywhere."""
    assert observed.prometheus.query('{__name__=~"meshauth_sidecar_.+", endpoint="app"}') == []
    assert observed.prometheus.query('{__name__=~".+", pid!=""}') == []
    assert observed.prometheus.query('{__name__=~"meshauth_sidecar_.+", endpoint="sidecar"}')


def test_counts_are_exact_with_four_recycling_workers(observed: Observed) -> None:
    service = observed.counted
    route = "/api/v1/openapi.json"
    series = f'http_server_request_duration_seconds_count{{job="{service}", http_route="{route}"}}'
    before = float(observed.prometheus.query(f"sum({series})")[0]["value"][1])
    url = f"{observed.fleet.url(service)}{route}"
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.get(url).status_code, range(COUNTED_REQUESTS)))
    assert codes == [200] * COUNTED_REQUESTS
    target = before + COUNTED_REQUESTS
    observed.prometheus.wait_for_sample(f"sum({series})", target)
    time.sleep(2)  # a few more scrapes: the sum must stay exact, not overshoot
    assert float(observed.prometheus.query(f"sum({series})")[0]["value"][1]) == target
    # One series per (method, status): no pid label, no copy per worker or per recycled worker.
    assert len(observed.prometheus.query(series)) == 1
    in_flight = observed.prometheus.query(f'http_server_active_requests{{job="{service}"}}')
    assert in_flight
    assert all("pid" not in s["metric"] for s in in_flight)
    assert sum(float(s["value"][1]) for s in in_flight) == 0
