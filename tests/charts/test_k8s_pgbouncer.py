"""k8s/pgbouncer, the optional PgBouncer component of a local cluster: valid and restricted objects, its
pool sizes agree with `mesh db budget`'s inputs, and its very pgbouncer.ini works with the real PgBouncer
(auth_query, SCRAM, transaction pooling) in front of a real PostgreSQL."""

from __future__ import annotations

import configparser
import os
import shutil
import tomllib
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from chartlib import CHARTS, REPO, app_chart_names, pod_specs
from test_render import hardening_violations, restricted_violations, validate_objects

from mesh.bootstrap import bootstrap, drop_database, local_passwords, service_url
from mesh.pooler import pgbouncer_binary, pooled_url
from mesh.postgres import free_port
from mesh.processes import ManagedProcess
from mesh.registry import load_registry
from mesh.testing import tool_missing

COMPONENT = REPO / "k8s" / "pgbouncer"


def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((COMPONENT / resource).read_text())
        if doc
    ]


def ini() -> configparser.ConfigParser:
    configmap = next(d for d in objects() if d["kind"] == "ConfigMap")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(configmap["data"]["pgbouncer.ini"])
    return parser


def test_component_objects_are_valid_and_restricted() -> None:
    docs = objects()
    assert {d["kind"] for d in docs} == {"Secret", "ConfigMap", "Service", "Deployment", "NetworkPolicy"}
    errors = validate_objects(docs)
    assert not errors, "\n".join(errors)
    specs = [s for d in docs for s in pod_specs(d)]
    assert len(specs) == 1
    problems = restricted_violations(specs[0]) + hardening_violations(specs[0])
    assert not problems, "\n".join(problems)


def test_component_is_optional_and_its_credentials_say_dev_only() -> None:
    main = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    assert "pgbouncer" not in main.get("resources", [])
    secret = next(d for d in objects() if d["kind"] == "Secret")
    assert "dev-only" in secret["stringData"]["userlist.txt"]
    admin = yaml.safe_load((REPO / "k8s" / "postgres" / "dev-secrets.yaml").read_text())
    password = admin["stringData"]["POSTGRES_PASSWORD"]
    assert secret["stringData"]["userlist.txt"] == f'"postgres" "{password}"'


def test_pool_sizes_match_what_mesh_db_budget_counts() -> None:
    settings = ini()["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    pooler = tomllib.loads((REPO / "mesh.toml").read_text())["database"]["pooler"]
    assert int(settings["max_client_conn"]) == pooler["max_client_conn"]
    for chart in app_chart_names():
        values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
        assert values["database"]["pooler"]["poolSize"] == int(settings["default_pool_size"]), chart


def test_the_component_configuration_pools_a_services_role(admin_url: str, tmp_path: Path) -> None:
    """The ConfigMap's pgbouncer.ini, pointed at the test server: auth_query finds the role's SCRAM
    secret, the client logs in with its password, and queries run in its schema."""
    binary = pgbouncer_binary()
    if binary is None:
        tool_missing("pgbouncer is not installed (Debian package pgbouncer)")
    registry = load_registry(REPO)
    database = f"test_pgb_{uuid.uuid4().hex[:8]}"
    bootstrap(admin_url, database, registry, local_passwords(registry))
    config = ini()
    server = psycopg2.extensions.parse_dsn(admin_url)
    port = free_port()
    config["databases"]["*"] = f"host=127.0.0.1 port={server['port']}"
    userlist = tmp_path / "userlist.txt"
    userlist.write_text(f'"{server["user"]}" "{server["password"]}"\n')
    config["pgbouncer"].update(
        listen_addr="127.0.0.1", listen_port=str(port), auth_file=str(userlist), auth_user=server["user"]
    )
    if os.geteuid() == 0:
        config["pgbouncer"]["user"] = "pgserver"  # PgBouncer refuses to run as root
        shutil.chown(userlist, "pgserver", "pgserver")
    path = tmp_path / "pgbouncer.ini"
    with path.open("w") as handle:
        config.write(handle)
    process = ManagedProcess("pgbouncer", [binary, str(path)], dict(os.environ), tmp_path / "pgbouncer.log")
    process.start()
    try:
        url = pooled_url(service_url(admin_url, database, "catalog"), port)
        conn = None
        for _ in range(100):
            try:
                conn = psycopg2.connect(url, connect_timeout=2)
                break
            except psycopg2.OperationalError:
                assert process.alive(), process.tail()
                import time

                time.sleep(0.1)
        assert conn is not None, process.tail()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT current_user, current_schema()")
                assert cursor.fetchone() == ("catalog", "catalog")
        finally:
            conn.close()
    finally:
        process.stop()
        drop_database(admin_url, database)


def test_checkov_passes_on_the_component(tmp_path: Path) -> None:
    from test_tools import run_checkov

    target = tmp_path / "pgbouncer"
    target.mkdir()
    for path in COMPONENT.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            shutil.copy(path, target / path.name)
    report = run_checkov(target)
    assert report["passed"] > 20
    failures = sorted({f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["failed"]})
    assert not failures, "\n".join(failures)
