"""The rendered pods follow the runtime contract (meshcontract, docs/runtime-contract.md).

Which variables each container may and must be given, the probe and scrape paths and the ports come
from meshcontract. The contract itself is held true to the code here. meshauth's settings (the app's
and the sidecar's) declare the contract variable of each field, so their reads are taken from those
declarations, and must be exactly what the contract says each container reads. meshkit's and the
services' settings read with ``setting("NAME")``, which takes type and default from the contract and
refuses a name it does not declare: a scan of the sources fails on a name the contract does not declare
for the service, and each service's settings, imported with nothing optional set, hold the contract's
defaults.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from chartlib import REPO, Rendered, Renderer, app_chart_names

import meshcontract as contract
from mesh.registry import load_registry
from meshauth.settings import AppSettings, AuthSettings, SidecarSettings
from meshcontract import Reader

REGISTRY = load_registry(REPO)
LOADERS = {"setting"}  # meshkit.env.setting; meshauth declares its reads (AuthSettings.variables)


@dataclass
class SourceFacts:
    env_reads: dict[str, set[str]] = field(default_factory=dict)  # name -> files
    files: int = 0


def _dotted(node: ast.AST) -> str:
    """``os.environ.get`` for the expression ``os.environ.get``; empty for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_env_name(value: str | None) -> bool:
    return bool(value) and value.replace("_", "").isalnum() and value.upper() == value and value[0].isalpha()


@cache
def source_facts(roots: tuple[Path, ...]) -> SourceFacts:
    """The environment variables the sources under ``roots`` read."""
    facts = SourceFacts()

    def read(name: str | None, path: Path) -> None:
        if _is_env_name(name):
            facts.env_reads.setdefault(name, set()).add(str(path.relative_to(REPO)))

    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if {"tests", "migrations"} & set(path.parts):
                continue
            facts.files += 1
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    name = _dotted(node.func)
                    # os.environ and meshkit's loader; a WSGI
                    # `environ` dict in an access logger is not the process environment.
                    if name in {"os.getenv", "os.environ.get"} or name.rsplit(".", 1)[-1] in LOADERS:
                        read(_str(node.args[0]) if node.args else None, path)
                    # database_config(url_variable="…") and friends name a variable to read
                    for kw in node.keywords:
                        if kw.arg and kw.arg.endswith("variable"):
                            read(_str(kw.value), path)
                elif isinstance(node, ast.Subscript) and _dotted(node.value) == "os.environ":
                    read(_str(node.slice), path)
                elif isinstance(node, ast.arguments):
                    # def f(url_variable: str = "DATABASE_URL"): the default names a variable
                    args = node.args[len(node.args) - len(node.defaults) :] + node.kwonlyargs
                    defaults = list(node.defaults) + list(node.kw_defaults)
                    for arg, default in zip(args, defaults, strict=False):
                        if arg.arg.endswith("variable"):
                            read(_str(default), path)
    return facts


def lib_src(name: str) -> Path:
    return REPO / "libs" / name / "src"


def app_roots(chart: str) -> tuple[Path, ...]:
    """Where the app container's code lives: the shared libs and the service itself."""
    return (lib_src("meshkit"), lib_src("meshauth"), REPO / "services" / chart / "src")


def declared(chart: str, *readers: Reader) -> dict[str, contract.Variable]:
    """What the contract says ``readers`` of ``chart``'s service read, families spelled out."""
    service = REGISTRY.services[chart]
    found: dict[str, contract.Variable] = {}
    for reader in readers:
        found |= contract.names(reader, chart, calls=service.calls, reads=service.reads)
    return found


def container(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    spec = rendered.one(kind)["spec"]["template"]["spec"]
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        if c["name"] == name:
            return c
    raise AssertionError(f"{rendered.chart}: no container {name} in the {kind}")


def env_of(rendered: Rendered, c: dict[str, Any]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        env.update(rendered.configmap(source["configMapRef"]["name"])["data"])
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def test_source_scan_finds_the_reads() -> None:
    """The scan itself works: it sees meshkit's reads, or the tests on the contract would be vacuous."""
    facts = source_facts((lib_src("meshkit"),))
    assert facts.files > 0, "no Python sources under libs/meshkit/src"
    assert {"DATABASE_URL", "SECRET_KEY", "GUNICORN_BIND", "PROMETHEUS_MULTIPROC_DIR"} <= set(facts.env_reads)
    assert "PATH_INFO" not in facts.env_reads, "a WSGI environ key is not an environment variable"


@pytest.mark.parametrize("chart", app_chart_names())
def test_every_variable_the_code_reads_is_in_the_contract(chart: str) -> None:
    facts = source_facts(app_roots(chart))
    known = declared(chart, *Reader)
    missing = {name: sorted(files) for name, files in facts.env_reads.items() if name not in known}
    assert not missing, f"read by the code but not declared in meshcontract: {missing}"


@pytest.mark.parametrize(
    ("settings", "reader"), [(AppSettings, Reader.APP), (SidecarSettings, Reader.SIDECAR)]
)
def test_meshauth_reads_exactly_what_the_contract_says(settings: type[AuthSettings], reader: Reader) -> None:
    """The contract's meshauth rows for a container are the fields of that container's settings."""
    said = {v.name for v in contract.VARIABLES if v.section == "meshauth" and reader in v.readers}
    assert said, "the contract names no meshauth variable: the check would be vacuous"
    assert settings.variables() == said


def test_every_declared_variable_is_read_by_some_code() -> None:
    roots = tuple(sorted((REPO / "libs").glob("*/src")) + sorted((REPO / "services").glob("*/src")))
    read = set(source_facts(roots).env_reads) | AppSettings.variables() | SidecarSettings.variables()
    members = {v.named(s) for v in contract.VARIABLES if v.family for s in REGISTRY.services}
    for variable in contract.VARIABLES:
        names = {variable.named(s) for s in REGISTRY.services} if variable.family else {variable.name}
        assert names & read, f"meshcontract declares {variable.name}, which no code reads"
    assert members, "the fleet's variable families expand to nothing"


def _typed(kind: str, value: str) -> object:
    """A declared default as the settings hold it."""
    if kind == "list":
        return [item.strip() for item in value.split(",") if item.strip()]
    if kind == "bool":
        return value == "true"
    return {"int": int, "float": float}.get(kind, str)(value)


@pytest.mark.parametrize("chart", app_chart_names())
def test_a_services_settings_hold_the_contracts_defaults(chart: str) -> None:
    """Import the service's Django settings with only its required variables set: every setting named
    like a variable with a declared default holds that default (the service's own, where it has one)."""
    known = declared(chart, Reader.APP)
    required = {name: "postgres://u:p@127.0.0.1:9/db" for name, v in known.items() if v.required}
    required |= {
        "SECRET_KEY": "k" * 40,
        "MESHAUTH_ISSUER": "http://identity.test",
        "MESHAUTH_AUDIENCE": chart,
    }
    env = {k: v for k, v in os.environ.items() if k not in known and k != "MESH_LOCAL_DEV"} | required
    names = [n for n, v in known.items() if n not in required and v.default_for(chart) is not None]
    show = (
        "import json, django.conf as c; s = c.settings; "
        f"print(json.dumps({{n: getattr(s, n) for n in {names!r} if hasattr(s, n)}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", show],
        env={**env, "DJANGO_SETTINGS_MODULE": f"{chart}.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    held = json.loads(result.stdout)
    assert {"DEBUG", "SECURE_HSTS_SECONDS", "DATA_UPLOAD_MAX_MEMORY_SIZE"} <= set(held), "nothing to compare"
    expected = {n: _typed(known[n].kind, known[n].default_for(chart) or "") for n in held}
    assert held == expected


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("chart", app_chart_names())
def test_each_container_gets_only_what_it_reads(renderer: Renderer, chart: str, mode: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": mode}})
    app = set(env_of(rendered, container(rendered, "Deployment", "app")))
    assert not app - set(declared(chart, Reader.APP)), "the app gets variables it does not read"
    # The migration Job runs the app image on the app's ConfigMap: what the app reads is allowed there.
    job = set(env_of(rendered, container(rendered, "Job", "migrate")))
    assert not job - set(declared(chart, Reader.APP, Reader.MIGRATE)), "the Job gets variables nobody reads"
    if mode == "sidecar":
        sidecar = set(env_of(rendered, container(rendered, "Deployment", "meshauth")))
        assert not sidecar - set(declared(chart, Reader.SIDECAR)), (
            "the sidecar gets variables it does not read"
        )


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("chart", app_chart_names())
def test_each_container_gets_every_variable_it_requires(renderer: Renderer, chart: str, mode: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": mode}})
    pods = [("Deployment", "app", Reader.APP), ("Job", "migrate", Reader.MIGRATE)]
    pods += [("Deployment", "meshauth", Reader.SIDECAR)] if mode == "sidecar" else []
    for kind, name, reader in pods:
        required = {n for n, v in declared(chart, reader).items() if v.required}
        assert required, f"the contract requires nothing of {reader}: the check would be vacuous"
        missing = required - set(env_of(rendered, container(rendered, kind, name)))
        assert not missing, f"{kind}/{name} lacks required {sorted(missing)}"


@pytest.mark.parametrize("chart", app_chart_names())
def test_probe_and_scrape_paths_are_the_contracts(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(
        chart, {"monitoring": {"serviceMonitor": {"enabled": True}}, "auth": {"mode": "sidecar"}}
    )
    app = container(rendered, "Deployment", "app")
    probes = {app[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == set(contract.PROBES)
    scraped = {e["path"] for e in rendered.one("ServiceMonitor")["spec"]["endpoints"]}
    assert scraped == {contract.METRICS, contract.SIDECAR_METRICS}


def _port(address: str) -> int:
    return int(urlsplit(address if "//" in address else f"//{address}").port or 0)


@pytest.mark.parametrize("chart", app_chart_names())
def test_ports_line_up_in_sidecar_mode(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "sidecar"}})
    app = container(rendered, "Deployment", "app")
    sidecar = container(rendered, "Deployment", "meshauth")
    app_env, sidecar_env = env_of(rendered, app), env_of(rendered, sidecar)
    assert sidecar["restartPolicy"] == "Always", "the sidecar must be a native sidecar"
    # gunicorn listens on a unix socket only the two containers mount: nothing else can reach it
    assert (
        app_env["GUNICORN_BIND"]
        == sidecar_env["MESHAUTH_SIDECAR_UPSTREAM"]
        == f"unix:{contract.UPSTREAM_SOCKET}"
    )
    socket_dir = str(PurePosixPath(contract.UPSTREAM_SOCKET).parent)
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "gunicorn"]
    assert volume["emptyDir"]["medium"] == "Memory"
    mounting = {
        c["name"]: m.get("readOnly", False)
        for c in spec.get("initContainers", []) + spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "gunicorn" and m["mountPath"] == socket_dir
    }
    assert mounting == {"app": False, "meshauth": True}, "the app binds the socket; the sidecar only connects"
    listen = _port(sidecar_env["MESHAUTH_SIDECAR_LISTEN"])
    assert [p["containerPort"] for p in sidecar["ports"] if p["name"] == "http"] == [listen]
    # The app's only port is its internal one (metrics, admin); its API is reached through the sidecar.
    assert {p["name"]: p["containerPort"] for p in app["ports"]} == {
        "metrics": _port(app_env["METRICS_BIND"])
    }
    metrics_listen = _port(sidecar_env["MESHAUTH_SIDECAR_METRICS_LISTEN"])
    assert [p["containerPort"] for p in sidecar["ports"] if p["name"] == "sidecar-metrics"] == [
        metrics_listen
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert app[probe]["httpGet"]["port"] == listen, f"{probe} must go through the sidecar"
    assert rendered.one("Service")["spec"]["ports"][0]["targetPort"] == "http"
    # The contract's ports, which are its defaults too (the code's own defaults are held to those above).
    assert listen == contract.APP_PORT == _port(str(contract.variable("MESHAUTH_SIDECAR_LISTEN").default))
    assert contract.variable("MESHAUTH_SIDECAR_UPSTREAM").default == f"unix:{contract.UPSTREAM_SOCKET}"
    sidecar_metrics = contract.variable("MESHAUTH_SIDECAR_METRICS_LISTEN").default
    assert metrics_listen == contract.SIDECAR_METRICS_PORT == _port(str(sidecar_metrics))
    assert _port(app_env["METRICS_BIND"]) == contract.METRICS_PORT
    assert app_env["MESHAUTH_PRINCIPAL_SECRET_FILE"] == sidecar_env["MESHAUTH_PRINCIPAL_SECRET_FILE"]


@pytest.mark.parametrize("chart", app_chart_names())
def test_ports_line_up_in_process(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "inprocess"}})
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    app = container(rendered, "Deployment", "app")
    env = env_of(rendered, app)
    bind = contract.variable("GUNICORN_BIND").default
    assert env["GUNICORN_BIND"] == bind, "in-process gunicorn binds where the contract's default says"
    port = _port(env["GUNICORN_BIND"])
    assert port == contract.APP_PORT
    assert [p["containerPort"] for p in app["ports"] if p["name"] == "http"] == [port]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert app[probe]["httpGet"]["port"] == port
    assert "MESHAUTH_PRINCIPAL_SECRET_FILE" not in env


@pytest.mark.parametrize("chart", app_chart_names())
def test_commands_exist_in_the_code(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "sidecar"}})
    command = container(rendered, "Deployment", "app")["command"]
    assert command[:2] == ["gunicorn", "--config"]
    assert command[2].startswith("python:")
    config_module = command[2].removeprefix("python:")
    package, _, module = config_module.partition(".")
    assert (lib_src(package) / package / f"{module}.py").is_file(), f"{config_module} not found"
    wsgi_package, _, wsgi_module = command[3].partition(".")
    wsgi = REPO / "services" / chart / "src" / wsgi_package / f"{wsgi_module}.py"
    assert wsgi.is_file(), f"{command[3]} not found: expected {wsgi.relative_to(REPO)}"

    migrate = container(rendered, "Job", "migrate")["command"]
    assert migrate[0] == "django-admin"
    commands = list(REPO.glob(f"libs/*/src/*/management/commands/{migrate[1]}.py"))
    assert commands, f"no management command {migrate[1]} under libs/"

    sidecar_command = container(rendered, "Deployment", "meshauth")["command"]
    scripts = tomllib.loads((REPO / "libs/meshauth/pyproject.toml").read_text())["project"]["scripts"]
    assert sidecar_command[0] in scripts
    target = scripts[sidecar_command[0]].split(":")[0]
    module_path = lib_src("meshauth") / Path(*target.split("."))
    assert module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file(), (
        f"{target} (the {sidecar_command[0]} entry point) not found"
    )
