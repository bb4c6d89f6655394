"""What `mesh pods` plays differs from the charts' `helm install` manifests only where podman needs it.

These run without podman: the charts are rendered by the Helm engine, adapted by mesh.containers.kube,
and the two pod specs are compared field by field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mesh.containers.kube import (
    ChartRenderer,
    PodPorts,
    adapt_env_map,
    adapt_pod_spec,
    adaptation_lines,
    address_replacements,
    pod_values,
)
from mesh.registry import find_root, load_registry

REPO = find_root(Path(__file__).parent)
REGISTRY = load_registry(REPO)
PORTS = {s.name: PodPorts.of(s) for s in REGISTRY}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> ChartRenderer:
    return ChartRenderer(REPO, tmp_path_factory.mktemp("charts"))


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``a`` and ``b`` differ (lists of named items are matched by name)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}.{key}")
            else:
                out += diff(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if all(isinstance(x, dict) and "name" in x for x in a + b):
            return diff({x["name"]: x for x in a}, {x["name"]: x for x in b}, path)
        if len(a) != len(b):
            return [path]
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("service", [s.name for s in REGISTRY])
def test_only_listed_fields_change(renderer: ChartRenderer, service: str, mode: str) -> None:
    docs = renderer.render(service, service, pod_values(REGISTRY[service], mode))
    rendered = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    ports = PORTS[service].port_map()
    replacements = address_replacements(REGISTRY, PORTS, service)
    played = adapt_pod_spec(copy.deepcopy(rendered), replacements, ports)
    changed = diff(rendered, played)
    # the listed adaptations: host network, ports, addresses, probes; nothing else
    addresses = (
        "MESHAUTH_JWKS_URL",
        "MESHAUTH_IDENTITY_URL",
        "MESHAUTH_SIDECAR_LISTEN",
        "MESHAUTH_SIDECAR_UPSTREAM",
        "MESHAUTH_SIDECAR_METRICS_LISTEN",
    )
    allowed = (
        ".hostNetwork",
        ".restartPolicy",
        ".ports",
        "Probe.",
        *(f".env.{name}.value" for name in addresses),
    )
    assert ".hostNetwork" in changed
    assert [p for p in changed if not any(a in p for a in allowed)] == []
    # podman can run it: no native sidecar, and every probe works without curl or nc
    assert all("restartPolicy" not in c for c in played.get("initContainers", []))
    for container in played["containers"]:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                assert container[kind]["exec"]["command"][:3] == ["python", "-m", "meshauth.sidecar.probe"]
                assert " " not in container[kind]["exec"]["command"][3]


def test_addresses_move_to_loopback_and_identifiers_stay(renderer: ChartRenderer) -> None:
    docs = renderer.render("orders", "orders", pod_values(REGISTRY["orders"], "sidecar"))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and "data" in d)["data"]
    adapted = adapt_env_map(configmap, address_replacements(REGISTRY, PORTS, "orders"))
    # gunicorn keeps its socket: on the pod's own volume, it collides with no other pod
    assert adapted["GUNICORN_BIND"] == configmap["GUNICORN_BIND"] == "unix:/run/gunicorn/app.sock"
    # the internal listener on the port `make up` gives it (mesh.toml port + 2000), off 0.0.0.0
    assert configmap["METRICS_BIND"] == "0.0.0.0:9090"
    assert adapted["METRICS_BIND"] == f"127.0.0.1:{REGISTRY['orders'].metrics_port}"
    assert adapted["CATALOG_URL"] == f"http://127.0.0.1:{PORTS['catalog'].public}"
    assert (
        adapted["MESHAUTH_JWKS_URL"] == f"http://127.0.0.1:{PORTS['identity'].public}/.well-known/jwks.json"
    )
    assert adapted["MESHAUTH_ISSUER"] == configmap["MESHAUTH_ISSUER"] == "http://identity:8000"
    assert {k for k in configmap if configmap[k] != adapted[k]} == {
        "METRICS_BIND",
        "CATALOG_URL",
        "MESHAUTH_JWKS_URL",
        "MESHAUTH_IDENTITY_URL",
    }


def test_every_pod_gets_its_own_internal_ports(renderer: ChartRenderer) -> None:
    """Three pods on the host's network: no two listen on the same port (9090/9091 included)."""
    listening: list[str] = []
    for service in REGISTRY:
        docs = renderer.render(service.name, service.name, pod_values(service, "sidecar"))
        configmap = next(d for d in docs if d["kind"] == "ConfigMap" and "data" in d)["data"]
        adapted = adapt_env_map(configmap, address_replacements(REGISTRY, PORTS, service.name))
        spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        played = adapt_pod_spec(spec, address_replacements(REGISTRY, PORTS, service.name), {})
        sidecar = {e["name"]: e.get("value") for c in played["containers"] for e in c.get("env", [])}
        binds = [
            adapted["METRICS_BIND"],
            sidecar["MESHAUTH_SIDECAR_LISTEN"],
            sidecar["MESHAUTH_SIDECAR_METRICS_LISTEN"],
        ]
        assert all(bind.startswith("127.0.0.1:") for bind in binds), binds
        # the same ports as `make up` (mesh.Fleet): one rule, from mesh.toml
        assert binds[0] == f"127.0.0.1:{service.metrics_port}"
        assert binds[2] == f"127.0.0.1:{service.sidecar_metrics_port}"
        listening += binds
    assert len(listening) == len(set(listening)) == 3 * len(REGISTRY.services)


def test_docs_list_every_adaptation() -> None:
    text = (REPO / "docs" / "pods.md").read_text()
    documented = [line for line in text.splitlines() if line.startswith("- ") and ": because " in line]
    assert documented == adaptation_lines()
