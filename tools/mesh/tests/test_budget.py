"""`mesh db budget`: the fleet's worst-case connections, from the charts rendered by the real Helm engine,
against the server's limit. `make test` runs it on the production scenario."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml

from mesh import budget
from mesh.registry import Registry, find_root, load_registry

ROOT = find_root(Path(__file__).parent)


def mesh_db_budget(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "db", "budget", *args],
        cwd=ROOT,
        # The limit comes from mesh.toml unless a test names a server.
        env={**{k: v for k, v in os.environ.items() if k != "DATABASE_ADMIN_URL"}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(ROOT)


@pytest.fixture(scope="module")
def renderer(registry: Registry) -> Iterator[budget.ChartRenderer]:
    with budget.chart_renderer(registry.root) as loaded:
        yield loaded


def values_file(tmp_path: Path, name: str, values: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_the_production_scenario_fits_a_100_connection_server() -> None:
    result = mesh_db_budget("--scenario", "production")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "production: fits (mesh.toml [database])" in result.stdout
    # Behind PgBouncer: 10 server connections per role (orders has two) and one per migration Job.
    assert "43 / 97" in result.stdout
    assert "pooler clients: 240 / 500" in result.stdout


def test_a_fleet_that_does_not_fit_is_refused_naming_the_service_and_the_key(tmp_path: Path) -> None:
    orders = values_file(
        tmp_path, "orders", {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 20}}
    )
    result = mesh_db_budget("--values", f"orders={orders}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "given values: DOES NOT FIT" in result.stdout
    refusal = [line for line in result.stdout.splitlines() if "does not fit:" in line]
    assert len(refusal) == 1, result.stdout
    # 25 pods (20 + a 25 % surge) × (3 workers × 2 aliases + 2 readyz) + the migration Job.
    assert "largest: orders (201)" in refusal[0]
    assert "in charts/orders lower autoscaling.maxReplicas (20)" in refusal[0]
    assert "database.pooler.enabled" in refusal[0]


def test_every_chart_scenario_is_budgeted_and_fits() -> None:
    result = mesh_db_budget()
    assert result.returncode == 0, result.stdout + result.stderr
    for scenario in ("defaults", "default", "inprocess", "minimal", "production"):
        assert f"{scenario}: fits" in result.stdout


def test_workers_and_threads_follow_the_values_as_meshkit_computes_them(
    registry: Registry, renderer: budget.ChartRenderer, tmp_path: Path
) -> None:
    limits = budget.limits_from_registry(registry)
    catalog = values_file(
        tmp_path,
        "catalog",
        {"resources": {"limits": {"cpu": "2500m"}}, "gunicorn": {"threads": 4}, "replicaCount": 4},
    )
    identity = values_file(
        tmp_path, "identity", {"gunicorn": {"workers": 5}, "migrations": {"enabled": False}}
    )
    fleet = budget.compute(
        registry, renderer, "given", {"catalog": [catalog], "identity": [identity]}, limits
    )
    rows = {s.service: s for s in fleet.services}
    # meshkit: 2 × ceil(2.5 CPUs) + 1 workers; 4 pods + 1 surge; one alias and one readyz each.
    assert (rows["catalog"].workers, rows["catalog"].threads, rows["catalog"].pods) == (7, 4, 4)
    assert rows["catalog"].server == 5 * (7 * 4 + 1) + 1
    assert (rows["identity"].workers, rows["identity"].migration) == (5, 0)
    assert rows["identity"].server == 3 * (5 + 1)
    # orders' defaults: two aliases (default and catalog's read-only one).
    assert rows["orders"].aliases == 2
    assert rows["orders"].server == 3 * (3 * 2 + 2) + 1
    assert fleet.total == rows["catalog"].server + rows["identity"].server + rows["orders"].server


def test_the_limit_is_read_from_the_server_when_one_is_given(admin_url: str) -> None:
    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int"
            )
            max_connections, reserved = cursor.fetchone()
    finally:
        conn.close()
    result = mesh_db_budget("--scenario", "minimal", "--server", admin_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "minimal: fits (server 127.0.0.1:" in result.stdout
    assert f"/ {max_connections - reserved}" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nope"], "unknown scenario(s) nope"),
        (["--values", "nobody=/dev/null"], "--values wants SERVICE=FILE"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = mesh_db_budget(*args)
    assert result.returncode == 2
    assert message in result.stdout


def test_values_the_chart_rejects_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = values_file(tmp_path, "orders", {"gunicorn": {"threads": 0}})
    result = mesh_db_budget("--values", f"orders={bad}")
    assert result.returncode == 2, result.stdout
    assert "orders: the chart rejects these values" in result.stdout
