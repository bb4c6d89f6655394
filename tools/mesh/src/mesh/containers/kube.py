"""The charts' `helm install` manifests as `podman kube play` runs them, changed only where it must.

The charts are rendered by the real Helm engine (helm-python-sdk) with ordinary values (local image
names, one replica, the sidecar as an ordinary container, localhost in ALLOWED_HOSTS). The
manifests are then adapted; every adaptation is in :data:`ADAPTATIONS` with its reason, and
nothing else in the rendered YAML changes.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh.containers.images import NAMESPACE, TAG
from mesh.registry import Registry, Service

__all__ = ["ADAPTATIONS", "ChartRenderer", "PodPorts", "adapt_pod_spec", "job_as_pod", "pod_values"]

Doc = dict[str, Any]

# The runtime contract's ports inside a pod (charts/django-service/templates/_config.tpl).
POD_HTTP_PORT = 8000
# The internal listeners: the app's /metrics and admin (METRICS_BIND), the sidecar's metrics.
POD_METRICS_PORT = 9090
POD_SIDECAR_METRICS_PORT = 9091
NAMESPACE_K8S = "mesh"
EXEC_PROBE_SLACK = 5

ADAPTATIONS: list[tuple[str, str]] = [
    (
        "hostNetwork: true on every pod",
        "podman gives a pod its own network only through a bridge network (private-range addresses, "
        "iptables); the host's network keeps all traffic on 127.0.0.0/8",
    ),
    (
        "each pod's port becomes its mesh.toml port (sidecar or in-process gunicorn), on 127.0.0.1 "
        "instead of 0.0.0.0:8000 (gunicorn behind the sidecar keeps its unix socket: each pod has its "
        "own volume)",
        "with the host's network all pods share one port space, so the contract's fixed 8000 would "
        "collide; listening on 127.0.0.1 keeps them off other interfaces",
    ),
    (
        "each pod's internal listeners (METRICS_BIND, the app's /metrics and admin, and "
        "MESHAUTH_SIDECAR_METRICS_LISTEN, the sidecar's metrics) move from 0.0.0.0:9090 and 0.0.0.0:9091 "
        "to 127.0.0.1 on its mesh.toml port + 2000 and + 3000, the ports `make up` gives them",
        "the contract's fixed 9090/9091 would collide between pods on the host's one port space; "
        "Prometheus (`mesh observe`) and a developer find them where `make up` puts them",
    ),
    (
        "restartPolicy: OnFailure instead of Always in pods with init containers",
        "podman applies the pod's policy to init containers too, restarting a finished one (and then "
        "failing the pod when it removes it); OnFailure still restarts every container that crashes",
    ),
    (
        "containers' ports: lists are dropped",
        "podman maps declared ports through a bridge, which host networking refuses; on the host's "
        "network a container's listening port is the host's",
    ),
    (
        "Service URLs (http://<service>:8000 in MESHAUTH_IDENTITY_URL, MESHAUTH_JWKS_URL, <CALLEE>_URL) "
        "become http://127.0.0.1:<port>; MESHAUTH_ISSUER, an identifier, is kept",
        "podman has no Services and no cluster DNS",
    ),
    (
        "httpGet and tcpSocket probes become exec probes doing the same request with the image's Python, "
        f"with {EXEC_PROBE_SLACK} s more timeout",
        "podman runs probes inside the container with curl or nc, which the slim images do not have "
        "(the kubelet probes from outside); starting a process in the container takes time the "
        "kubelet's request does not",
    ),
    (
        "Jobs (the k8s/ bootstrap Job, each chart's pre-install migration hook) run as bare Pods, in "
        "hook order, and `mesh pods` waits for each to succeed",
        "podman 4 plays Pods and Deployments, not Jobs or Helm hooks",
    ),
    (
        "the bootstrap Job's PGHOST/PGPORT/PGDATABASE and the Secrets' database URLs point at the "
        "embedded PostgreSQL on 127.0.0.1",
        "no in-cluster postgres Service; the Secrets are the operator's to create, as for helm install",
    ),
    (
        "Service, ServiceAccount, NetworkPolicy, HPA, PDB, Ingress and monitoring objects are not played",
        "podman has no API server or controllers for them (the chart tests validate them)",
    ),
    (
        "volumes are named <pod>-<volume>; the bootstrap Job's ConfigMap gets the run's suffix",
        "podman makes each emptyDir a machine-wide named volume called after the pod's volume, and a "
        "configMap volume one called after the ConfigMap: pods would share /tmp and the principal secret",
    ),
    (
        "Secrets are created with `podman secret create` (JSON of base64 values), not played",
        "podman 4 stores a played Secret in a form its own secretKeyRef cannot read",
    ),
    (
        "with a port offset, release and Secret names get a -<offset> suffix",
        "podman's pod and secret names are global on the machine; a second mesh needs its own",
    ),
]
"""What differs between `helm install` and `mesh pods`, and why (printed by `mesh pods --explain`)."""

# Not changed because podman silently ignores them, and listed so nobody is surprised:
IGNORED_BY_PODMAN = [
    "emptyDir medium: Memory (podman backs the volume with disk)",
    "readinessProbe (no Service to take the pod out of; `mesh pods` polls /readyz itself)",
    "lifecycle.preStop, topologySpreadConstraints, resources.requests",
]

# The same check the kubelet would make, from inside the container with the image's Python (every
# image holds meshauth). One argument without spaces: podman joins the command into a shell line.
PROBE = ["python", "-m", "meshauth.sidecar.probe"]


@dataclass(frozen=True)
class PodPorts:
    """Where one service's pod listens on the host: public (sidecar or in-process gunicorn) and the
    internal listeners (the app's /metrics and admin, the sidecar's metrics)."""

    public: int
    metrics: int
    sidecar_metrics: int

    @classmethod
    def of(cls, service: Service, port_offset: int = 0) -> PodPorts:
        """The ports `make up` gives ``service`` (mesh.Fleet's rule, from mesh.toml), so both agree."""
        return cls(
            service.port + port_offset,
            service.metrics_port + port_offset,
            service.sidecar_metrics_port + port_offset,
        )

    def port_map(self) -> dict[int, int]:
        """The contract's in-pod ports → this pod's host ports (for probes)."""
        return {
            POD_HTTP_PORT: self.public,
            POD_METRICS_PORT: self.metrics,
            POD_SIDECAR_METRICS_PORT: self.sidecar_metrics,
        }


def pod_values(service: Service, mode: str, engine: str = "python") -> dict[str, Any]:
    """Values for a local run: ordinary chart values, nothing podman-specific but the sidecar form."""
    return {
        "image": {"registry": "", "repository": f"{NAMESPACE}/{service.name}", "tag": TAG},
        "replicaCount": 1,
        # two workers per service, as `make up` runs them (the chart's default derives 2 x CPU + 1 from
        # the CPU limit, and without cgroup delegation podman leaves every core visible)
        "gunicorn": {"workers": 2},
        "django": {"allowedHosts": ["127.0.0.1", "localhost"]},
        "auth": {
            "mode": mode,
            "sidecar": {
                "engine": engine,
                "native": False,
                "image": {"registry": "", "repository": f"{NAMESPACE}/meshauth", "tag": TAG},
            },
        },
    }


class ChartRenderer:
    """The app charts rendered by the Helm engine, from a temporary copy (the library chart vendored)."""

    def __init__(self, root: Path, workdir: Path) -> None:
        import helm_python as helm  # the Helm v4 engine; imported here: only `mesh pods` needs it

        self._helm = helm
        shutil.copytree(
            root / "charts",
            workdir / "charts",
            ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz"),
        )
        self.workdir = workdir

    def render(self, chart: str, release: str, values: dict[str, Any]) -> list[Doc]:
        path = self.workdir / "charts" / chart
        if not (path / "charts").exists():
            self._helm.dependency_update(path)
        loaded = self._helm.Chart.load(path)
        out = loaded.render(values=values, name=release, namespace=NAMESPACE_K8S, is_install=True)
        docs: list[Doc] = []
        for name, text in out.items():
            if not name.endswith("NOTES.txt"):
                docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return docs


@contextmanager
def chart_renderer(root: Path) -> Iterator[ChartRenderer]:
    with tempfile.TemporaryDirectory(prefix="mesh-charts-") as tmp:
        yield ChartRenderer(root, Path(tmp))


def _rewrite(value: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        value = value.replace(old, new)
    return value


def address_replacements(registry: Registry, ports: dict[str, PodPorts], service: str) -> dict[str, str]:
    """Pod-internal addresses and Service URLs → this host's loopback ports."""
    own = ports[service]
    result = {
        f"0.0.0.0:{POD_HTTP_PORT}": f"127.0.0.1:{own.public}",
        f"0.0.0.0:{POD_METRICS_PORT}": f"127.0.0.1:{own.metrics}",
        f"0.0.0.0:{POD_SIDECAR_METRICS_PORT}": f"127.0.0.1:{own.sidecar_metrics}",
    }
    for name in registry.services:
        if name in ports:
            result[f"http://{name}:{POD_HTTP_PORT}"] = f"http://127.0.0.1:{ports[name].public}"
    return result


# Variables whose value is an identifier, not an address: kept as rendered.
_KEEP = {"MESHAUTH_ISSUER", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"}


def adapt_env_map(data: dict[str, str], replacements: dict[str, str]) -> dict[str, str]:
    return {k: v if k in _KEEP else _rewrite(str(v), replacements) for k, v in data.items()}


def _probe(probe: dict[str, Any], port_map: dict[int, int]) -> dict[str, Any]:
    probe = copy.deepcopy(probe)
    if "httpGet" in probe or "tcpSocket" in probe:
        probe["timeoutSeconds"] = probe.get("timeoutSeconds", 1) + EXEC_PROBE_SLACK
    if "httpGet" in probe:
        get = probe.pop("httpGet")
        port = port_map.get(int(get["port"]), get["port"])
        probe["exec"] = {"command": [*PROBE, f"http://127.0.0.1:{port}{get['path']}"]}
    elif "tcpSocket" in probe:
        port = probe.pop("tcpSocket")["port"]
        probe["exec"] = {"command": [*PROBE, f"tcp://127.0.0.1:{port_map.get(int(port), port)}"]}
    return probe


def adapt_pod_spec(spec: Doc, replacements: dict[str, str], port_map: dict[int, int]) -> Doc:
    """A pod spec as podman can run it on the host's loopback (see ADAPTATIONS)."""
    spec = copy.deepcopy(spec)
    spec["hostNetwork"] = True
    if spec.get("initContainers") and spec.get("restartPolicy", "Always") == "Always":
        spec["restartPolicy"] = "OnFailure"
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for entry in container.get("env", []):
            if "value" in entry and entry["name"] not in _KEEP:
                entry["value"] = _rewrite(str(entry["value"]), replacements)
        # podman turns declared ports into port mappings, which the host's network refuses; a
        # container on the host's network listens on the host's ports anyway.
        container.pop("ports", None)
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                container[kind] = _probe(container[kind], port_map)
    return spec


def job_as_pod(job: Doc, name: str) -> Doc:
    """The pod a Job would create (its template), named ``name``."""
    template = job["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": dict(template.get("metadata", {}).get("labels", {})),
            "annotations": dict(template.get("metadata", {}).get("annotations", {})),
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def secret(name: str, data: dict[str, str]) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE_K8S},
        "type": "Opaque",
        "stringData": data,
    }


def dump(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def adaptation_lines() -> list[str]:
    """ADAPTATIONS as the Markdown list docs/pods.md carries (a test keeps the two equal)."""
    return [f"- {what}: because {why}." for what, why in ADAPTATIONS]
