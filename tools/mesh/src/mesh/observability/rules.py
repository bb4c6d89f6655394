"""A service's Prometheus rules: SLO recording rules, multiwindow multi-burn-rate alerts, auth and
database alerts. The charts ship the result as a PrometheusRule (``charts/<svc>/files/rules.yaml``).

Every expression selects ``job="<service>"``: the ServiceMonitor sets the job label from the
``app.kubernetes.io/name`` label whatever the release is called, and the local Prometheus of the
tests does the same. Probes and scrapes never reach the request histogram (meshkit skips them at
the source); requests that matched no route (``http_route="unmatched"``, scanners' 404s) are left out
of the SLIs here, and 4xx answers are the caller's mistakes, never errors of the service.
"""

from __future__ import annotations

from typing import Any

from mesh.observability.slo import BURN_ALERTS, DEFAULT_SLO, SLO, WINDOWS, le_matcher, window_seconds

__all__ = ["GRAFANA_URL", "RUNBOOKS_URL", "generate_service_rules", "runbook_anchor", "title_case"]

# Where a notification's links lead. The runbooks are this repository's docs/runbooks.md, one section
# per kind of alert (its anchor: the alert name without the service, lower case). The dashboard link
# points at the Grafana of `skaffold dev -p monitoring`; a chart rewrites its scheme and host from
# `monitoring.grafanaUrl`, so a release links its own Grafana without regenerating this file.
RUNBOOKS_URL = "https://github.com/django-mesh/django-mesh/blob/main/docs/runbooks.md"
GRAFANA_URL = "http://localhost:3000"

REQUESTS = "http_server_request_duration_seconds"
# JWKS older than three cache TTLs (meshauth refreshes every 300 s) means refreshes keep failing;
# at 24 h the verifier refuses every token, so this leaves a day to act.
JWKS_STALE_SECONDS = 900
# A spike of rejected tokens: more than this share of presented tokens, at least this many per second.
REJECTED_RATIO = 0.10
REJECTED_MIN_RATE = 0.2
# Database errors (connection failures, failing statements) per second, and their share of queries.
DB_ERROR_MIN_RATE = 0.05
DB_ERROR_RATIO = 0.05


def runbook_anchor(alert: str, service: str) -> str:
    """``("OrdersDatabaseErrors", "orders")`` -> ``"databaseerrors"``: the section of docs/runbooks.md."""
    return alert.removeprefix(title_case(service)).lower()


def _links(alert: str, service: str) -> dict[str, str]:
    """The annotations a notification turns into links: the runbook section and the dashboard (on the
    alert's namespace; "All" where the series carry none, outside Kubernetes)."""
    return {
        "runbook_url": f"{RUNBOOKS_URL}#{runbook_anchor(alert, service)}",
        "dashboard": f"mesh-{service}",
        "dashboard_url": (
            f"{GRAFANA_URL}/d/mesh-{service}?var-namespace={{{{ or $labels.namespace `$__all` }}}}"
        ),
    }


def _with_links(alert: dict[str, Any], service: str) -> dict[str, Any]:
    alert["annotations"] = {**alert["annotations"], **_links(alert["alert"], service)}
    return alert


def title_case(service: str) -> str:
    """``"orders"`` -> ``"Orders"``, ``"pay-out"`` -> ``"PayOut"`` (alert names are CamelCase)."""
    return "".join(part.capitalize() for part in service.replace("_", "-").split("-"))


def _sli_rules(service: str, slo: SLO) -> list[dict[str, Any]]:
    sel = f'job="{service}", http_route!="unmatched"'
    rules: list[dict[str, Any]] = []
    for window in WINDOWS:
        answered = f"sum by (namespace, job) (rate({REQUESTS}_count{{{sel}}}[{window}]))"
        # Requests the sidecar answered 502/503/504 because the app did not: the app never counted them.
        lost = (
            "sum by (namespace, job) "
            f'(rate(meshauth_sidecar_upstream_errors_total{{job="{service}"}}[{window}]))'
        )
        requests = f'job:slo_requests:rate{window}{{job="{service}"}}'
        rules += [
            {
                # Each `or 0 * ...` makes a missing term read 0: no 5xx yet, or no sidecar (in-process).
                "record": f"job:slo_requests:rate{window}",
                "expr": f"({answered}\n  or 0 * {lost})\n+ ({lost}\n  or 0 * {answered})",
            },
            {
                "record": f"job:slo_errors:ratio_rate{window}",
                "expr": (
                    "(\n"
                    f"  (sum by (namespace, job) (rate({REQUESTS}_count{{{sel},"
                    f' http_response_status_code=~"5.."}}[{window}]))\n'
                    f"    or 0 * {requests})\n"
                    f"  + ({lost}\n    or 0 * {requests})\n"
                    ")\n"
                    f"/ {requests}"
                ),
            },
            {
                "record": f"job:slo_slow_requests:ratio_rate{window}",
                "expr": (
                    "1 - (\n"
                    f"  sum by (namespace, job) (rate({REQUESTS}_bucket{{{sel},"
                    f" {le_matcher(slo.latency_threshold)}}}[{window}]))\n"
                    f"  / {answered}\n"
                    ")"
                ),
            },
        ]
    return rules


def _burn_alert(service: str, slo: SLO, sli: str, what: str, budget: float, page: bool) -> dict[str, Any]:
    pairs = [alert for alert in BURN_ALERTS if (alert.severity == "critical") == page]
    clauses = []
    for pair in pairs:
        threshold = round(pair.factor * budget, 10)
        min_rate = round(slo.min_requests / window_seconds(pair.long), 10)
        clauses.append(
            "(\n"
            f'  job:{sli}:ratio_rate{pair.long}{{job="{service}"}} > {threshold}\n'
            f'  and job:{sli}:ratio_rate{pair.short}{{job="{service}"}} > {threshold}\n'
            f'  and job:slo_requests:rate{pair.long}{{job="{service}"}} > {min_rate}\n'
            ")"
        )
    kind = "fast" if page else "slow"
    objective = slo.availability if what == "availability" else slo.latency
    windows = " or ".join(f"{p.long}/{p.short} at {p.factor:g}x" for p in pairs)
    return {
        "alert": f"{title_case(service)}{what.capitalize()}BudgetBurn{kind.capitalize()}",
        "expr": "\nor\n".join(clauses),
        "for": "2m" if page else "15m",
        "labels": {
            "severity": pairs[0].severity,
            "service": service,
            "slo": what,
        },
        "annotations": {
            "summary": f"{service} is burning its {what} error budget {'fast' if page else 'steadily'}",
            "description": (
                f"{{{{ $value | humanizePercentage }}}} of the requests to {service} are "
                + (
                    "answered with a 5xx (or a 502/503/504 from the sidecar)"
                    if what == "availability"
                    else f"slower than {slo.latency_threshold:g} s"
                )
                + f" (burn windows {windows}; objective {_percent(objective)})."
                + (
                    " Users notice now: look at the service dashboard."
                    if page
                    else " Plan a fix before the budget is gone."
                )
            ),
        },
    }


def _percent(value: float) -> str:
    return f"{value * 100:g}%"


def _auth_rules(service: str) -> list[dict[str, Any]]:
    def decisions(selector: str) -> str:
        # A pod verifies tokens in one place: its sidecar (meshauth_sidecar_*) or, in-process mode, the
        # app (mode="inprocess"). The app also counts its check of the sidecar's headers
        # (mode="sidecar"); those are not token decisions and would count every request twice.
        return (
            "sum by (namespace, job) (rate(meshauth_sidecar_auth_decisions_total"
            f'{{job="{service}", {selector}}}[5m]))\n'
            "or sum by (namespace, job) (rate(meshauth_auth_decisions_total"
            f'{{job="{service}", mode="inprocess", {selector}}}[5m]))'
        )

    rejected = f'job:meshauth_tokens_rejected:rate5m{{job="{service}"}}'
    presented = f'job:meshauth_tokens_presented:rate5m{{job="{service}"}}'
    refresh = (
        "sum by (namespace, job) "
        '(increase(meshauth_sidecar_jwks_refresh_total{{job="{s}", outcome="{o}"}}[15m]))\n'
        "  or sum by (namespace, job) "
        '(increase(meshauth_jwks_refresh_total{{job="{s}", outcome="{o}"}}[15m]))'
    )
    name = title_case(service)
    return [
        {
            # A missing token is an anonymous caller, not a bad one: only presented tokens count.
            "record": "job:meshauth_tokens_rejected:rate5m",
            "expr": decisions('result="rejected", reason!="missing"'),
        },
        {
            "record": "job:meshauth_tokens_presented:rate5m",
            "expr": decisions('result=~"accepted|rejected|forbidden", reason!="missing"'),
        },
        {
            "alert": f"{name}JwksStale",
            "expr": (
                "max by (namespace, job) "
                f'({{__name__=~"meshauth_(sidecar_)?jwks_age_seconds", job="{service}"}})'
                f" > {JWKS_STALE_SECONDS}\n"
                "or (\n"
                f"  ({refresh.format(s=service, o='failure')}) > 0\n"
                f"  unless ({refresh.format(s=service, o='success')}) > 0\n"
                ")"
            ),
            "for": "5m",
            "labels": {"severity": "warning", "service": service},
            "annotations": {
                "summary": f"{service} cannot refresh identity's signing keys",
                "description": (
                    f"The JWKS cached by {service} is older than {JWKS_STALE_SECONDS // 60} minutes or "
                    "every refresh in 15 minutes failed. Tokens signed by a new key are rejected now; "
                    "after 24 h every token "
                    "is. Check identity's /.well-known/jwks.json from the pod."
                ),
            },
        },
        {
            "alert": f"{name}TokenRejectionSpike",
            "expr": (f"{rejected} > {REJECTED_MIN_RATE}\nand ({rejected} / {presented}) > {REJECTED_RATIO}"),
            "for": "10m",
            "labels": {"severity": "warning", "service": service},
            "annotations": {
                "summary": f"{service} rejects many bearer tokens",
                "description": (
                    f"{{{{ $value | humanize }}}} tokens/s rejected by {service}, more than "
                    f"{REJECTED_RATIO:.0%} of the tokens presented: a client with a bad or expired token, "
                    "a signing key identity rotated without publishing, or someone probing. The "
                    "auth panel shows the reasons."
                ),
            },
        },
    ]


def _database_rules(service: str) -> list[dict[str, Any]]:
    errors = f'sum by (namespace, job, db_alias) (rate(meshkit_db_errors_total{{job="{service}"}}[5m]))'
    queries = (
        "sum by (namespace, job, db_alias) "
        f'(rate(db_client_operation_duration_seconds_count{{job="{service}"}}[5m]))'
    )
    return [
        {
            "alert": f"{title_case(service)}DatabaseErrors",
            # A refused connection never reaches a query, so the ratio's divisor may be 0: +Inf fires.
            "expr": f"{errors} > {DB_ERROR_MIN_RATE}\nand ({errors} / {queries}) > {DB_ERROR_RATIO}",
            "for": "5m",
            "labels": {"severity": "critical", "service": service},
            "annotations": {
                "summary": f"{service} cannot use its database ({{{{ $labels.db_alias }}}})",
                "description": (
                    f"{{{{ $value | humanize }}}} database errors/s in {service} on alias "
                    "{{ $labels.db_alias }} (connections refused, timeouts, failing statements), more than "
                    f"{DB_ERROR_RATIO:.0%} of its queries. /readyz fails with it, so pods leave the Service: "
                    "check PostgreSQL, the role's password Secret and connection limits."
                ),
            },
        },
    ]


def generate_service_rules(service_name: str, slo: SLO = DEFAULT_SLO) -> dict[str, Any]:
    """The ``groups:`` document of ``service_name``'s PrometheusRule."""
    service = service_name
    down = {
        "alert": f"{title_case(service)}Down",
        "expr": f'max by (namespace) (up{{job="{service}"}}) == 0',
        "for": "5m",
        "labels": {"severity": "critical", "service": service},
        "annotations": {
            "summary": f"no {service} pod answers Prometheus",
            "description": f"Every {service} target has been down for 5 minutes.",
        },
    }
    groups = {
        "groups": [
            {"name": f"{service}.slo.recording", "rules": _sli_rules(service, slo)},
            {
                "name": f"{service}.slo.alerts",
                "rules": [
                    _burn_alert(service, slo, "slo_errors", "availability", slo.availability_budget, page)
                    for page in (True, False)
                ]
                + [
                    _burn_alert(service, slo, "slo_slow_requests", "latency", slo.latency_budget, page)
                    for page in (True, False)
                ]
                + [down],
            },
            {"name": f"{service}.auth", "rules": _auth_rules(service)},
            {"name": f"{service}.database", "rules": _database_rules(service)},
        ]
    }
    for group in groups["groups"]:
        group["rules"] = [_with_links(rule, service) if "alert" in rule else rule for rule in group["rules"]]
    return groups
