"""The rendered pods match what the code actually serves and reads (docs/runtime-contract.md).

Nothing here repeats a list of names: env var names, paths, ports and commands are read from the
Python sources under libs/ and services/. If the sources hold nothing to compare with, the tests fail.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chartlib import REPO, Rendered, Renderer, app_chart_names

# Names that no code of ours reads because a library we depend on does; each is checked to be in
# that library's installed source, so a wrong name here still fails.
THIRD_PARTY_READERS = {"PROMETHEUS_MULTIPROC_DIR": "prometheus_client"}


@dataclass
class SourceFacts:
    env_reads: dict[str, set[str]] = field(default_factory=dict)  # name -> files
    env_defaults: dict[str, set[str]] = field(default_factory=dict)  # name -> literal defaults
    served_paths: set[str] = field(default_factory=set)
    files: int = 0


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        inner = func.value
        prefix = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")
        return f"{prefix}.{func.attr}"
    return ""


def _str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_env_name(value: str | None) -> bool:
    return bool(value) and value.replace("_", "").isalnum() and value.upper() == value and value[0].isalpha()


def _is_server(tree: ast.Module, path: Path) -> bool:
    """A module that answers HTTP: a URLconf, a middleware, or the sidecar's server."""
    if path.name == "urls.py" or "sidecar" in path.parts or path.stem == "sidecar":
        return True
    return any(isinstance(node, ast.ClassDef) and "Middleware" in node.name for node in ast.walk(tree))


def _normalise_path(value: str) -> str:
    return "/" + value.strip("^$").strip("/")


@cache
def source_facts(roots: tuple[Path, ...]) -> SourceFacts:
    facts = SourceFacts()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if {"tests", "migrations"} & set(path.parts):
                continue
            facts.files += 1
            tree = ast.parse(path.read_text(), str(path))
            server = _is_server(tree, path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = _call_name(node)
                    first = _str(node.args[0]) if node.args else None
                    reads_env = (
                        name in {"os.getenv", "environ.get", "os.environ.get", "getenv"}
                        or "env" in name.rsplit(".", 1)[-1].lower()
                    )
                    if reads_env and _is_env_name(first):
                        facts.env_reads.setdefault(first, set()).add(str(path.relative_to(REPO)))
                        default = _str(node.args[1]) if len(node.args) > 1 else None
                        for kw in node.keywords:
                            if kw.arg == "default":
                                default = _str(kw.value)
                        if default is not None:
                            facts.env_defaults.setdefault(first, set()).add(default)
                    # database_config(url_variable="…") and friends name a variable to read
                    for kw in node.keywords:
                        if kw.arg and kw.arg.endswith("variable") and _is_env_name(_str(kw.value)):
                            facts.env_reads.setdefault(_str(kw.value), set()).add(str(path.relative_to(REPO)))
                elif isinstance(node, ast.Subscript) and _call_name_of_subscript(node) == "os.environ":
                    key = _str(node.slice)
                    if _is_env_name(key):
                        facts.env_reads.setdefault(key, set()).add(str(path.relative_to(REPO)))
                elif isinstance(node, ast.arguments):
                    # def f(url_variable: str = "DATABASE_URL"): the default names a variable
                    args = node.args[len(node.args) - len(node.defaults) :] + node.kwonlyargs
                    defaults = list(node.defaults) + list(node.kw_defaults)
                    for arg, default in zip(args, defaults, strict=False):
                        value = _str(default)
                        if arg.arg.endswith("variable") and _is_env_name(value):
                            facts.env_reads.setdefault(value, set()).add(str(path.relative_to(REPO)))
                elif server and isinstance(node, ast.Constant) and isinstance(node.value, str):
                    value = node.value
                    if (
                        value
                        and " " not in value
                        and (value.startswith("/") or value.endswith("/") or value.startswith("^"))
                    ):
                        facts.served_paths.add(_normalise_path(value))
    return facts


def _call_name_of_subscript(node: ast.Subscript) -> str:
    value = node.value
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
        return f"{value.value.id}.{value.attr}"
    return ""


def lib_src(name: str) -> Path:
    return REPO / "libs" / name / "src"


def app_roots(chart: str) -> tuple[Path, ...]:
    """Where the app container's code lives: the shared libs and the service itself."""
    return (lib_src("meshkit"), lib_src("meshauth"), REPO / "services" / chart / "src")


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


def unread(names: set[str], facts: SourceFacts) -> list[str]:
    missing = []
    for name in sorted(names):
        if name in facts.env_reads:
            continue
        module = THIRD_PARTY_READERS.get(name)
        if module and name in _package_source(module):
            continue
        missing.append(name)
    return missing


@cache
def _package_source(module: str) -> str:
    spec = __import__(module)
    root = Path(spec.__file__).parent
    return "\n".join(p.read_text(errors="ignore") for p in root.rglob("*.py"))


def test_source_scan_finds_the_contract() -> None:
    """The scan itself works: it sees meshkit's reads, or every other test here would be vacuous."""
    facts = source_facts((lib_src("meshkit"),))
    assert facts.files > 0, "no Python sources under libs/meshkit/src"
    assert {"DATABASE_URL", "SECRET_KEY", "GUNICORN_BIND"} <= set(facts.env_reads)
    assert "/livez" in facts.served_paths


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("chart", app_chart_names())
def test_app_env_names_are_read_by_the_code(renderer: Renderer, chart: str, mode: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": mode}})
    facts = source_facts(app_roots(chart))
    assert facts.env_reads, f"found no environment reads in {app_roots(chart)}"
    for kind, name in [("Deployment", "app"), ("Job", "migrate")]:
        names = set(env_of(rendered, container(rendered, kind, name)))
        assert not unread(names, facts), f"{kind}/{name} sets variables no code reads"


@pytest.mark.parametrize("chart", app_chart_names())
def test_sidecar_env_names_are_read_by_meshauth(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "sidecar"}})
    facts = source_facts((lib_src("meshauth"),))  # the sidecar image has no meshkit
    names = set(env_of(rendered, container(rendered, "Deployment", "meshauth")))
    assert not unread(names, facts), "the sidecar gets variables meshauth does not read"


@pytest.mark.parametrize("chart", app_chart_names())
def test_probe_and_scrape_paths_are_served(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(
        chart, {"monitoring": {"serviceMonitor": {"enabled": True}}, "auth": {"mode": "sidecar"}}
    )
    facts = source_facts(app_roots(chart))
    assert facts.served_paths, "found no served paths (urls.py, middleware, sidecar) in the sources"
    app = container(rendered, "Deployment", "app")
    paths = {app[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    paths |= {e["path"] for e in rendered.one("ServiceMonitor")["spec"]["endpoints"]}
    assert {"/livez", "/readyz"} <= paths
    assert not {_normalise_path(p) for p in paths} - facts.served_paths


def _port(address: str) -> int:
    return int(urlsplit(address if "//" in address else f"//{address}").port or 0)


@pytest.mark.parametrize("chart", app_chart_names())
def test_ports_line_up_in_sidecar_mode(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "sidecar"}})
    app = container(rendered, "Deployment", "app")
    sidecar = container(rendered, "Deployment", "meshauth")
    app_env, sidecar_env = env_of(rendered, app), env_of(rendered, sidecar)
    assert sidecar["restartPolicy"] == "Always", "the sidecar must be a native sidecar"
    assert app_env["GUNICORN_BIND"].startswith("127.0.0.1:"), "gunicorn must not be reachable from outside"
    assert _port(app_env["GUNICORN_BIND"]) == _port(sidecar_env["MESHAUTH_SIDECAR_UPSTREAM"])
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
    # The code's own defaults agree with what the chart sets.
    facts = source_facts((lib_src("meshauth"),))
    for name in ("MESHAUTH_SIDECAR_LISTEN", "MESHAUTH_SIDECAR_UPSTREAM", "MESHAUTH_SIDECAR_METRICS_LISTEN"):
        defaults = facts.env_defaults.get(name)
        assert defaults, f"meshauth has no literal default for {name}"
        assert {_port(d) for d in defaults} == {_port(sidecar_env[name])}
    assert app_env["MESHAUTH_PRINCIPAL_SECRET_FILE"] == sidecar_env["MESHAUTH_PRINCIPAL_SECRET_FILE"]


@pytest.mark.parametrize("chart", app_chart_names())
def test_ports_line_up_in_process(renderer: Renderer, chart: str) -> None:
    rendered = renderer.render(chart, {"auth": {"mode": "inprocess"}})
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    app = container(rendered, "Deployment", "app")
    env = env_of(rendered, app)
    bind_defaults = source_facts((lib_src("meshkit"),)).env_defaults.get("GUNICORN_BIND")
    assert bind_defaults == {env["GUNICORN_BIND"]}, "in-process gunicorn binds where meshkit's default says"
    port = _port(env["GUNICORN_BIND"])
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
