"""`promtool test rules` on every service's generated rules: each alert fires on synthetic series that
should page (or open a ticket) and stays silent on ones that should not.

The scenarios are written once and run against every service of `mesh.toml`, on the committed
`charts/<svc>/files/rules.yaml`. Annotations are dropped from the copy promtool loads: they are text
for humans (checked by `promtool check rules` in tests/charts) and promtool would otherwise compare
every rendered description word for word.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from obslib import REPO, require_tool

from mesh.observability.rules import title_case
from mesh.registry import load_registry

SERVICES = sorted(load_registry(REPO).services)
OK = {"http_request_method": "GET", "http_route": "/api/v1/things", "http_response_status_code": "200"}
REQ = "http_server_request_duration_seconds"


def labels(**values: str) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in values.items()) + "}"


@dataclass
class Scenario:
    """Counters growing at fixed rates per minute for ``minutes``, and what each alert does at the end."""

    minutes: int
    series: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    gauges: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    firing: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    silent: tuple[str, ...] = ()

    def counter(self, name: str, per_minute: float, **extra: str) -> Scenario:
        self.series.append((name, extra, per_minute))
        return self

    def requests(
        self, service: str, per_minute: float, code: str = "200", route: str = "/api/v1/things"
    ) -> Scenario:
        return self.counter(
            f"{REQ}_count",
            per_minute,
            **{**OK, "job": service, "http_route": route, "http_response_status_code": code},
        )

    def promtool_test(self, service: str) -> dict[str, Any]:
        input_series = [
            {
                "series": name + labels(job=service, **{k: v for k, v in extra.items() if k != "job"}),
                "values": f"0+{per_minute:g}x{self.minutes}",
            }
            for name, extra, per_minute in self.series
        ] + [
            {"series": name + labels(job=service, **extra), "values": values}
            for name, extra, values in self.gauges
        ]
        tests = [
            {
                "eval_time": f"{self.minutes}m",
                "alertname": alert,
                "exp_alerts": [{"exp_labels": exp} for exp in expected],
            }
            for alert, expected in self.firing.items()
        ] + [{"eval_time": f"{self.minutes}m", "alertname": alert, "exp_alerts": []} for alert in self.silent]
        return {"interval": "1m", "input_series": input_series, "alert_rule_test": tests}


ALL_ALERTS = (
    "AvailabilityBudgetBurnFast",
    "AvailabilityBudgetBurnSlow",
    "LatencyBudgetBurnFast",
    "LatencyBudgetBurnSlow",
    "JwksStale",
    "TokenRejectionSpike",
    "DatabaseErrors",
    "Down",
)


def slo_labels(service: str, slo: str, severity: str) -> dict[str, str]:
    return {"job": service, "service": service, "slo": slo, "severity": severity}


def availability(service: str, minutes: int, ok: float, errors: float) -> Scenario:
    return Scenario(minutes).requests(service, ok).requests(service, errors, code="500")


def latency(service: str, minutes: int, fast: float, slow: float) -> Scenario:
    scenario = Scenario(minutes).requests(service, fast + slow)
    bucket = {**OK, "job": service}
    # The bucket at the 1 s threshold counts the fast requests; +Inf counts all of them.
    scenario.counter(f"{REQ}_bucket", fast, **bucket, le="1.0")
    scenario.counter(f"{REQ}_bucket", fast + slow, **bucket, le="+Inf")
    return scenario


def scenarios(service: str) -> dict[str, Scenario]:
    name = title_case(service)
    a = {k: f"{name}{k}" for k in ALL_ALERTS}
    page = [slo_labels(service, "availability", "critical")]
    ticket = [slo_labels(service, "availability", "warning")]
    found: dict[str, Scenario] = {}

    s = availability(service, 60, ok=1000, errors=0.5)  # 0.05 %: within a 99.9 % objective
    s.requests(service, 400, code="404").requests(service, 100, code="401")
    s.requests(service, 5000, code="500", route="unmatched")  # no route matched: not the service's
    s.silent = tuple(a.values())
    found["healthy with 4xx and unmatched 5xx: nothing fires"] = s

    s = availability(service, 20, ok=100, errors=5)  # 4.8 %: 33x the budget
    s.firing = {a["AvailabilityBudgetBurnFast"]: page}
    found["5% errors for 20m: fast burn (1h/5m) pages"] = s

    s = (
        Scenario(20)
        .requests(service, 0)
        .counter("meshauth_sidecar_upstream_errors_total", 50, kind="connect")
    )
    s.requests(service, 100)
    s.firing = {a["AvailabilityBudgetBurnFast"]: page}
    found["sidecar answers 503 (app unreachable): fast burn pages"] = s

    s = availability(service, 60, ok=0.5, errors=0.5)  # 50 % errors, but 60 requests an hour
    s.silent = (a["AvailabilityBudgetBurnFast"],)
    found["below the minimum traffic: no page"] = s

    s = availability(service, 7 * 60, ok=1000, errors=10)  # 1 %: under 14.4x in 1h, over 6x in 6h
    s.firing = {a["AvailabilityBudgetBurnFast"]: page}
    found["1% errors for 7h: fast burn (6h/30m) pages"] = s

    s = availability(service, 3 * 60, ok=1000, errors=4)  # 0.4 %: over 3x in 1d, under 6x in 6h
    s.firing = {a["AvailabilityBudgetBurnSlow"]: ticket}
    s.silent = (a["AvailabilityBudgetBurnFast"],)
    found["0.4% errors for 3h: slow burn (1d/2h) opens a ticket, no page"] = s

    s = availability(service, 7 * 60, ok=1000, errors=2)  # 0.2 %: over 1x in 3d, under 3x in 1d
    s.firing = {a["AvailabilityBudgetBurnSlow"]: ticket}
    s.silent = (a["AvailabilityBudgetBurnFast"],)
    found["0.2% errors for 7h: slow burn (3d/6h) opens a ticket"] = s

    s = latency(service, 20, fast=80, slow=20)  # 20 % slower than 1 s: over 14.4x a 1 % budget
    s.firing = {a["LatencyBudgetBurnFast"]: [slo_labels(service, "latency", "critical")]}
    s.silent = (a["AvailabilityBudgetBurnFast"],)
    found["20% slow requests: latency fast burn pages"] = s

    s = latency(service, 3 * 60, fast=96, slow=4)  # 4 %: over 3x in 1d, under 6x in 6h
    s.firing = {a["LatencyBudgetBurnSlow"]: [slo_labels(service, "latency", "warning")]}
    s.silent = (a["LatencyBudgetBurnFast"],)
    found["4% slow requests for 3h: latency ticket, no page"] = s

    s = latency(service, 60, fast=995, slow=5)
    s.silent = (a["LatencyBudgetBurnFast"], a["LatencyBudgetBurnSlow"])
    found["0.5% slow requests: no latency alert"] = s

    warn = [{"job": service, "service": service, "severity": "warning"}]
    s = Scenario(30)
    s.gauges.append(("meshauth_sidecar_jwks_age_seconds", {}, "0+60x30"))  # an hour-old key set
    s.firing = {a["JwksStale"]: warn}
    found["JWKS not refreshed for 30m: stale"] = s

    s = Scenario(30).counter("meshauth_jwks_refresh_total", 2, outcome="failure")
    s.counter("meshauth_jwks_refresh_total", 0, outcome="success")
    s.firing = {a["JwksStale"]: warn}
    found["every JWKS refresh failing: stale"] = s

    s = Scenario(30).counter("meshauth_sidecar_jwks_refresh_total", 1, outcome="failure")
    s.counter("meshauth_sidecar_jwks_refresh_total", 0.2, outcome="success")
    s.gauges.append(("meshauth_sidecar_jwks_age_seconds", {}, "0+2x30"))
    s.silent = (a["JwksStale"],)
    found["some refreshes failing, keys fresh: not stale"] = s

    decisions = "meshauth_sidecar_auth_decisions_total"
    s = Scenario(30).counter(decisions, 600, result="accepted", reason="")
    s.counter(decisions, 120, result="rejected", reason="bad_signature")
    s.firing = {a["TokenRejectionSpike"]: warn}
    found["sidecar rejects 17% of tokens at 2/s: spike"] = s

    inprocess = "meshauth_auth_decisions_total"
    s = Scenario(30).counter(inprocess, 600, mode="inprocess", result="accepted", reason="")
    s.counter(inprocess, 300, mode="inprocess", result="rejected", reason="expired")
    s.firing = {a["TokenRejectionSpike"]: warn}
    found["in-process verification rejects 33% of tokens: spike"] = s

    s = Scenario(30).counter(decisions, 600, result="accepted", reason="")
    s.counter(decisions, 3000, result="rejected", reason="missing")
    s.counter(decisions, 6, result="rejected", reason="expired")
    s.silent = (a["TokenRejectionSpike"],)
    found["missing tokens and a trickle of expired ones: no spike"] = s

    db = {"job": service, "service": service, "severity": "critical", "db_alias": "default"}
    s = Scenario(20).counter("meshkit_db_errors_total", 60, db_alias="default")
    s.counter("db_client_operation_duration_seconds_count", 0, db_alias="default")
    s.firing = {a["DatabaseErrors"]: [db]}
    found["database refusing connections (no query runs): database alert"] = s

    s = Scenario(20).counter("meshkit_db_errors_total", 60, db_alias="default")
    s.counter("db_client_operation_duration_seconds_count", 300, db_alias="default")
    s.firing = {a["DatabaseErrors"]: [db]}
    found["20% of queries failing: database alert"] = s

    s = Scenario(20).counter("meshkit_db_errors_total", 6, db_alias="default")
    s.counter("db_client_operation_duration_seconds_count", 6000, db_alias="default")
    s.silent = (a["DatabaseErrors"],)
    found["a few failing statements among many: no database alert"] = s

    s = Scenario(10)
    s.gauges.append(("up", {}, "0x10"))
    s.firing = {a["Down"]: [{"service": service, "severity": "critical"}]}
    found["every target down: down"] = s
    return found


CASES = [(service, title) for service in SERVICES for title in scenarios(service)]


def test_every_alert_is_exercised() -> None:
    """Each alert of each service fires in some scenario and stays silent in another."""
    for service in SERVICES:
        rules = yaml.safe_load((REPO / "charts" / service / "files" / "rules.yaml").read_text())
        alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
        fired = {alert for s in scenarios(service).values() for alert in s.firing}
        silent = {alert for s in scenarios(service).values() for alert in s.silent}
        assert alerts == fired, f"{service}: alerts without a firing scenario: {alerts - fired}"
        assert alerts - {f"{title_case(service)}Down"} <= silent, (
            f"{service}: never shown silent: {alerts - silent}"
        )


def rules_without_annotations(service: str, tmp_path: Path) -> Path:
    rules = yaml.safe_load((REPO / "charts" / service / "files" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / f"{service}-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def run_promtool(
    tmp_path: Path, rules: Path, tests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    spec = tmp_path / "test.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}, sort_keys=False
        )
    )
    return subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("service", "title"), CASES, ids=[f"{s}: {t}" for s, t in CASES])
def test_alert_scenario(service: str, title: str, tmp_path: Path) -> None:
    scenario = scenarios(service)[title]
    result = run_promtool(
        tmp_path, rules_without_annotations(service, tmp_path), [scenario.promtool_test(service)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_notices_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness can fail: a firing alert declared silent is reported."""
    service = SERVICES[0]
    scenario = scenarios(service)["5% errors for 20m: fast burn (1h/5m) pages"]
    scenario.silent, scenario.firing = tuple(scenario.firing), {}
    result = run_promtool(
        tmp_path, rules_without_annotations(service, tmp_path), [scenario.promtool_test(service)]
    )
    assert result.returncode != 0
    assert "AvailabilityBudgetBurnFast" in result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_error_ratio_recording_rule(service: str, tmp_path: Path) -> None:
    """5xx count, 4xx only in the denominator, unmatched routes not at all, sidecar upstream errors do."""
    s = Scenario(10).requests(service, 90).requests(service, 50, code="404").requests(service, 5, code="503")
    s.requests(service, 1000, code="500", route="unmatched")
    s.counter("meshauth_sidecar_upstream_errors_total", 5, kind="timeout")
    test = s.promtool_test(service)
    test["promql_expr_test"] = [
        {
            # (5 + 5) / (90 + 50 + 5 + 5) = 1/15, scaled to an integer: float rates are not exact.
            "expr": f'round(job:slo_errors:ratio_rate5m{{job="{service}"}} * 1500)',
            "eval_time": "10m",
            "exp_samples": [{"labels": f'{{job="{service}"}}', "value": 100}],
        },
        {
            "expr": f'round(job:slo_requests:rate5m{{job="{service}"}} * 60)',
            "eval_time": "10m",
            "exp_samples": [{"labels": f'{{job="{service}"}}', "value": 150}],
        },
    ]
    result = run_promtool(tmp_path, rules_without_annotations(service, tmp_path), [test])
    assert result.returncode == 0, result.stdout + result.stderr
