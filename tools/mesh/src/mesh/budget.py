"""`mesh db budget`: does the fleet's worst case fit the shared PostgreSQL's connection limit?

Each chart is rendered with the real Helm engine, so the figures are what the pods would get: pods are
the HPA's ``maxReplicas`` (or ``replicaCount``) plus the rolling update's surge; gunicorn workers come
from ``GUNICORN_WORKERS`` or, as meshkit computes them, from the app container's CPU limit
(2 × CPUs + 1); threads from ``GUNICORN_THREADS``; one connection per thread and database alias
(``CONN_MAX_AGE`` keeps them open); ``/readyz`` opens one fresh connection per alias per pod; the
migration hook Job holds one (sequential retries). The sidecar has no database connection.

Behind PgBouncer (``database.pooler.enabled``) the pods' connections end at the pooler: the server
sees at most ``database.pooler.poolSize`` per role (alias), plus the migration Job, which goes direct.
The pooler's own client limit is checked against the pods' total instead.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import yaml

from mesh.registry import Registry

__all__ = [
    "DEFAULTS",
    "FleetBudget",
    "Limits",
    "ServiceBudget",
    "compute",
    "limits_from_registry",
    "limits_from_server",
    "scenario_names",
]

DEFAULTS = "defaults"  # the charts' own values.yaml, no ci/ file


class BudgetError(Exception):
    """Input the budget cannot use (a values file the chart rejects, a missing CPU limit, ...)."""


@dataclass(frozen=True)
class Limits:
    """What the server allows: ``max_connections`` minus the connections reserved for superusers."""

    max_connections: int
    reserved: int
    source: str
    pooler_max_client_conn: int | None = None

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class ServiceBudget:
    """One service's worst case, with the values keys each factor comes from."""

    service: str
    pods: int
    pods_key: str
    surge: int
    workers: int
    workers_key: str
    threads: int
    aliases: int
    migration: int
    pool_size: int | None = None

    @property
    def per_pod(self) -> int:
        # Every thread keeps one connection per alias; /readyz opens one more per alias.
        return self.workers * self.threads * self.aliases + self.aliases

    @property
    def clients(self) -> int:
        """Connections the pods open (to the server, or to the pooler when there is one)."""
        return (self.pods + self.surge) * self.per_pod

    @property
    def server(self) -> int:
        """Connections this service may hold on the PostgreSQL server at worst."""
        if self.pool_size is not None:
            return min(self.clients, self.pool_size * self.aliases) + self.migration
        return self.clients + self.migration

    def advice(self) -> str:
        """Which values keys lower this service's share."""
        if self.pool_size is not None:
            return f"database.pooler.poolSize ({self.pool_size})"
        return (
            f"{self.pods_key} ({self.pods}), gunicorn.workers ({self.workers}, {self.workers_key}) or "
            f"gunicorn.threads ({self.threads}), or put it behind PgBouncer (database.pooler.enabled)"
        )


@dataclass(frozen=True)
class FleetBudget:
    scenario: str
    services: tuple[ServiceBudget, ...]
    limits: Limits

    @property
    def total(self) -> int:
        return sum(s.server for s in self.services)

    @property
    def pooled_clients(self) -> int:
        return sum(s.clients for s in self.services if s.pool_size is not None)

    def problems(self) -> list[str]:
        """One line per reason the fleet does not fit; empty when it does."""
        found: list[str] = []
        if self.total > self.limits.available:
            worst = max(self.services, key=lambda s: s.server)
            found.append(
                f"{self.scenario}: {self.total} connections > {self.limits.available} available "
                f"(max_connections {self.limits.max_connections} - {self.limits.reserved} reserved); "
                f"largest: {worst.service} ({worst.server}); in charts/{worst.service} lower {worst.advice()}"
            )
        cap = self.limits.pooler_max_client_conn
        if cap is not None and self.pooled_clients > cap:
            worst = max((s for s in self.services if s.pool_size is not None), key=lambda s: s.clients)
            found.append(
                f"{self.scenario}: {self.pooled_clients} pooler clients > PgBouncer's max_client_conn "
                f"{cap} (mesh.toml [database.pooler]); largest: {worst.service} ({worst.clients}); "
                f"in charts/{worst.service} lower {worst.pods_key} ({worst.pods}) or gunicorn.workers "
                f"({worst.workers}), "
                "or raise max_client_conn"
            )
        return found

    def table(self) -> str:
        header = (
            "service",
            "pods",
            "surge",
            "workers",
            "threads",
            "aliases",
            "per pod",
            "migration",
            "pooled",
            "server",
        )
        rows = [header]
        for s in self.services:
            pooled = f"pool {s.pool_size}×{s.aliases}" if s.pool_size is not None else "no"
            rows.append(
                (
                    s.service,
                    str(s.pods),
                    str(s.surge),
                    str(s.workers),
                    str(s.threads),
                    str(s.aliases),
                    str(s.per_pod),
                    str(s.migration),
                    pooled,
                    str(s.server),
                )
            )
        verdict = "fits" if not self.problems() else "DOES NOT FIT"
        rows.append(("fleet", "", "", "", "", "", "", "", "", f"{self.total} / {self.limits.available}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"{self.scenario}: {verdict} ({self.limits.source})"]
        for index, row in enumerate(rows):
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells))
            if index == 0 or index == len(rows) - 2:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if self.pooled_clients:
            cap = self.limits.pooler_max_client_conn
            lines.append(f"  pooler clients: {self.pooled_clients}" + (f" / {cap}" if cap else ""))
        return "\n".join(lines)


# -- limits ---------------------------------------------------------------------------------------


def limits_from_registry(registry: Registry) -> Limits:
    """``[database]`` of `mesh.toml`: the managed server's ``max_connections`` and ``reserved``."""
    data = tomllib.loads((registry.root / "mesh.toml").read_text()).get("database", {})
    pooler = data.get("pooler", {})
    return Limits(
        max_connections=int(data.get("max_connections", 100)),
        reserved=int(data.get("reserved", 3)),
        source="mesh.toml [database]",
        pooler_max_client_conn=int(pooler["max_client_conn"]) if "max_client_conn" in pooler else None,
    )


def limits_from_server(url: str, fallback: Limits) -> Limits:
    """The live server's limits (``max_connections`` minus every reserved slot)."""
    conn = psycopg2.connect(url, connect_timeout=3)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            )
            settings = {name: int(value) for name, value in cursor.fetchall()}
    finally:
        conn.close()
    parts = urlsplit(url)
    reserved = settings.get("superuser_reserved_connections", 0) + settings.get("reserved_connections", 0)
    return Limits(
        max_connections=settings["max_connections"],
        reserved=reserved,
        source=f"server {parts.hostname}:{parts.port or 5432}",
        pooler_max_client_conn=fallback.pooler_max_client_conn,
    )


# -- values and rendering ---------------------------------------------------------------------------


def scenario_names(registry: Registry) -> list[str]:
    """``defaults`` and every ``ci/<name>-values.yaml`` name any service's chart has."""
    names: set[str] = set()
    for service in registry:
        for path in (registry.root / "charts" / service.name / "ci").glob("*-values.yaml"):
            names.add(path.name.removesuffix("-values.yaml"))
    return [DEFAULTS, *sorted(names)]


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge key by key, anything else is replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load_values(paths: Sequence[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BudgetError(f"cannot read {path}: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise BudgetError(f"{path}: values must be a YAML map")
        values = merge(values, loaded)
    return values


def scenario_files(registry: Registry, scenario: str) -> dict[str, list[Path]]:
    """Each service's values files for ``scenario`` (none for ``defaults`` or a missing ci/ file)."""
    files: dict[str, list[Path]] = {}
    for service in registry:
        path = registry.root / "charts" / service.name / "ci" / f"{scenario}-values.yaml"
        files[service.name] = [path] if scenario != DEFAULTS and path.is_file() else []
    return files


class ChartRenderer:
    """The app charts, copied once to a temporary directory with the library chart vendored offline."""

    def __init__(self, root: Path, workdir: Path) -> None:
        import helm_python as helm

        self._helm = helm
        self.charts = workdir / "charts"
        shutil.copytree(
            root / "charts", self.charts, ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
        )
        self._loaded: dict[str, Any] = {}

    def chart_values(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((self.charts / name / "values.yaml").read_text()) or {}
        return loaded

    def render(self, name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        helm = self._helm
        if name not in self._loaded:
            helm.dependency_update(self.charts / name)
            self._loaded[name] = helm.Chart.load(self.charts / name)
        try:
            out = self._loaded[name].render(values=values, name=name, namespace="mesh", is_install=True)
        except helm.HelmError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BudgetError(f"{name}: the chart rejects these values: {first}") from None
        docs: list[dict[str, Any]] = []
        for path, text in out.items():
            if not path.endswith("NOTES.txt"):
                docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return docs


@contextmanager
def chart_renderer(root: Path) -> Iterator[ChartRenderer]:
    with tempfile.TemporaryDirectory(prefix="mesh-budget-") as workdir:
        yield ChartRenderer(root, Path(workdir))


def cpu_count(limit: object) -> int:
    """CPUs of a Kubernetes CPU quantity, rounded up as meshkit's ``cpu_limit`` rounds the quota."""
    text = str(limit).strip()
    try:
        cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise BudgetError(f"cannot read the CPU limit {text!r}") from None
    return max(1, math.ceil(cpus))


def surge(pods: int, max_surge: object) -> int:
    """Extra pods during a rolling update: a percentage rounds up, as Kubernetes does."""
    text = str(max_surge if max_surge is not None else "25%")
    if text.endswith("%"):
        return math.ceil(pods * int(text[:-1]) / 100)
    return int(text)


def service_budget(name: str, docs: list[dict[str, Any]], values: Mapping[str, Any]) -> ServiceBudget:
    """Read one service's worst case from its rendered manifests (and the pooler from its values)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployment = by_kind["Deployment"][0]
    spec = deployment["spec"]
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if hpas:
        pods, pods_key = int(hpas[0]["spec"]["maxReplicas"]), "autoscaling.maxReplicas"
    else:
        pods, pods_key = int(spec.get("replicas", 1)), "replicaCount"
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    containers = spec["template"]["spec"]["containers"]
    app = next(c for c in containers if c["name"] == "app")
    configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in by_kind.get("ConfigMap", [])}
    env: dict[str, str] = {}
    for source in app.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update({k: str(v) for k, v in configmaps.get(ref["name"], {}).items()})
    aliases = 0
    for entry in app.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        if entry["name"].endswith("DATABASE_URL"):
            aliases += 1
    aliases = max(aliases, 1 if "DATABASE_URL" in env else aliases)
    if env.get("GUNICORN_WORKERS"):
        workers, workers_key = int(env["GUNICORN_WORKERS"]), "gunicorn.workers"
    else:
        limit = app.get("resources", {}).get("limits", {}).get("cpu")
        if limit is None:
            raise BudgetError(
                f"{name}: no CPU limit and no gunicorn.workers: the workers would follow the node's "
                "cores; set resources.limits.cpu or gunicorn.workers"
            )
        cpus = cpu_count(limit)
        workers, workers_key = 2 * cpus + 1, f"from resources.limits.cpu {limit}"
    threads = int(env.get("GUNICORN_THREADS", "1"))
    jobs = [
        job
        for job in by_kind.get("Job", [])
        if "helm.sh/hook" in job["metadata"].get("annotations", {})
        and "migrate_locked" in " ".join(job["spec"]["template"]["spec"]["containers"][0].get("command", []))
    ]
    pooler = values.get("database", {}).get("pooler", {}) or {}
    pool_size = int(pooler.get("poolSize", 10)) if pooler.get("enabled") else None
    return ServiceBudget(
        service=name,
        pods=pods,
        pods_key=pods_key,
        surge=surge(pods, rolling.get("maxSurge")),
        workers=workers,
        workers_key=workers_key,
        threads=threads,
        aliases=aliases,
        migration=1 if jobs else 0,
        pool_size=pool_size,
    )


def compute(
    registry: Registry,
    renderer: ChartRenderer,
    scenario: str,
    files: Mapping[str, Sequence[Path]],
    limits: Limits,
) -> FleetBudget:
    """The fleet's budget with each service's ``files`` layered over its chart's values."""
    services = []
    for service in registry:
        user = load_values(files.get(service.name, ()))
        docs = renderer.render(service.name, user)
        merged = merge(renderer.chart_values(service.name), user)
        services.append(service_budget(service.name, docs, merged))
    return FleetBudget(scenario=scenario, services=tuple(services), limits=limits)
