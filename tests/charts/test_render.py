"""Every chart lints strictly, every ci/ scenario renders, and every object is valid Kubernetes."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
from chartlib import (
    CHARTS,
    KUBE_VERSIONS,
    LIBRARY,
    NAMESPACE,
    TIMINGS,
    Rendered,
    Renderer,
    all_containers,
    app_chart_names,
    pod_specs,
    scenario_ids,
    scenario_values,
)

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
}


def test_app_charts_exist() -> None:
    assert set(app_chart_names()) >= {"identity", "catalog", "orders"}


@pytest.mark.parametrize("kube_version", [KUBE_VERSIONS[0], KUBE_VERSIONS[-1]])
@pytest.mark.parametrize("chart", [LIBRARY, *app_chart_names()])
def test_lint_strict(renderer: Renderer, chart: str, kube_version: str) -> None:
    if chart != LIBRARY:
        renderer.chart(chart)  # vendors the library chart into the copy
    report = helm.lint(renderer.chart_dir(chart), strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report
    assert not problems, report


@pytest.mark.parametrize(("chart", "scenario"), scenario_ids())
def test_lint_strict_with_each_scenario(renderer: Renderer, chart: str, scenario: str) -> None:
    renderer.chart(chart)
    report = helm.lint(
        renderer.chart_dir(chart),
        scenario_values(chart, scenario),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSIONS[-1]}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report
    assert not problems, report


@pytest.mark.parametrize("chart", app_chart_names())
def test_each_chart_has_the_required_scenarios(chart: str) -> None:
    names = {path.name for path in (CHARTS / chart / "ci").glob("*-values.yaml")}
    assert names >= {
        "default-values.yaml",
        "inprocess-values.yaml",
        "production-values.yaml",
        "minimal-values.yaml",
    }


@pytest.mark.parametrize("chart", app_chart_names())
def test_chart_packages(renderer: Renderer, chart: str, tmp_path: Path) -> None:
    renderer.chart(chart)
    archive = helm.package(renderer.chart_dir(chart), destination=tmp_path)
    packaged = helm.Chart.load(archive)
    assert packaged.metadata["apiVersion"] == "v2"
    assert [dep["name"] for dep in packaged.dependencies] == [LIBRARY]
    # The packaged chart renders by itself: the library templates and files/ travel with it.
    out = packaged.render(values=scenario_values(chart, "production"), name=chart, namespace=NAMESPACE)
    assert any("PrometheusRule" in text for text in out.values())


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as `kubernetes-validate --strict` does for built-in kinds."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


_CRD_VALIDATORS: dict[tuple[str, str], jsonschema.Draft7Validator] = {}


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    key = (api_version, kind)
    if key not in _CRD_VALIDATORS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())["schema"]
        _CRD_VALIDATORS[key] = jsonschema.Draft7Validator(_strict(schema))
    return _CRD_VALIDATORS[key]


def validate_objects(docs: list[dict[str, Any]]) -> list[str]:
    """Errors of every object against Kubernetes 1.29…1.34 (strict) or its CRD schema."""
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            errors += [
                f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in crd_validator(*key).iter_errors(copy.deepcopy(doc))
            ]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name} on Kubernetes {version}: {exc.message} at {exc.path}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{name}: no schema for {key} in Kubernetes {version}")
    return errors


def test_every_scenario_renders_valid_objects(scenarios: dict[tuple[str, str], Rendered]) -> None:
    started = time.perf_counter()
    errors = []
    count = 0
    for (chart, scenario), rendered in scenarios.items():
        assert rendered.docs, f"{chart}/{scenario} rendered nothing"
        count += len(rendered.docs)
        errors += [f"{chart}/{scenario}: {error}" for error in validate_objects(rendered.docs)]
    TIMINGS[f"validate {count} objects x {len(KUBE_VERSIONS)} Kubernetes versions"] = (
        time.perf_counter() - started
    )
    assert not errors, "\n".join(errors)


def test_crd_validation_catches_an_unknown_field() -> None:
    """The CRD check is strict: a misspelt field fails, so a green run means something."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]},
    }
    assert any("intervall" in error for error in validate_objects([bad]))


def test_kubernetes_validation_catches_an_unknown_field() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPortt": 80}]},
    }
    assert validate_objects([bad])


# --- Pod Security Standard "restricted" -------------------------------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Pod Security Standard "restricted" (baseline included), as the admission controller checks it."""
    out = []
    pod_sc = spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(host) is True and host != "hostUsers":
            out.append(f"{host} is true")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"volume {volume['name']} has type {sorted(kinds)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl['name']}")
    if pod_sc.get("seccompProfile", {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    if pod_sc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    if pod_sc.get("seLinuxOptions", {}).get("type") not in (
        None,
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ):
        out.append("pod seLinuxOptions.type")
    if pod_sc.get("appArmorProfile", {}).get("type") == "Unconfined":
        out.append("pod appArmorProfile Unconfined")
    containers = all_containers(spec)
    if not containers:
        out.append("no containers")
    for container in containers:
        name = container["name"]
        sc = container.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        if not (
            sc.get("runAsNonRoot") is True
            or (pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)
        ):
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault/Localhost")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            out.append(f"{name}: appArmorProfile Unconfined")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
        if container.get("lifecycle", {}).get("preStop", {}).get("tcpSocket"):
            out.append(f"{name}: tcpSocket lifecycle handler")
    return out


def hardening_violations(spec: dict[str, Any]) -> list[str]:
    """Beyond "restricted": what the issue asks of every container of the mesh."""
    out = []
    for container in all_containers(spec):
        name = container["name"]
        sc = container.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: root filesystem is writable")
        limits = container.get("resources", {}).get("limits", {})
        if not {"cpu", "memory"} <= set(limits):
            out.append(f"{name}: no cpu and memory limits")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if "/tmp" not in mounts:  # noqa: S108
            out.append(f"{name}: no /tmp volume (read-only root filesystem)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for volume in volumes.values():
        if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory":
            out.append(f"emptyDir {volume['name']} is not memory-backed")
    if spec.get("automountServiceAccountToken") is not False:
        out.append("the ServiceAccount token is mounted")
    return out


def test_every_pod_passes_restricted(scenarios: dict[tuple[str, str], Rendered]) -> None:
    checked = 0
    errors = []
    for (chart, scenario), rendered in scenarios.items():
        for doc in rendered.docs:
            for spec in pod_specs(doc):
                checked += 1
                errors += [
                    f"{chart}/{scenario} {doc['kind']}/{doc['metadata']['name']}: {problem}"
                    for problem in restricted_violations(spec) + hardening_violations(spec)
                ]
    # Every scenario renders a Deployment and a migration Job, except `minimal` (no migration hook).
    minimal = sum(name == "minimal" for _, name in scenarios)
    assert checked >= 2 * len(scenarios) - minimal, (
        "expected a Deployment and a Job in every non-minimal scenario"
    )
    assert not errors, "\n".join(errors)


def test_restricted_check_catches_violations() -> None:
    spec = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
    }
    problems = " ".join(restricted_violations(spec))
    for expected in (
        "hostNetwork",
        "hostPath",
        "allowPrivilegeEscalation",
        "drop ALL",
        "SYS_ADMIN",
        "runAsNonRoot",
        "seccompProfile",
    ):
        assert expected in problems
