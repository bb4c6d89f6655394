"""skaffold.yaml: valid v4beta14 (every profile applied too), and every file it names exists.

The releases' values are rendered by the real Helm engine against the charts, so a key the charts
rename or a value their schema rejects fails here, not in someone's `skaffold dev`.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from deliverylib import (
    REPO,
    SIDECAR,
    SKAFFOLD,
    SKAFFOLD_SCHEMA,
    apply_patches,
    flatten,
    has_dotted,
    set_dotted,
    skaffold_config,
    skaffold_configs,
)

CONFIGS = skaffold_configs()
# Where file sync puts Python sources in a pod: its writable memory-backed /tmp (see skaffold.yaml).
POD_TMP = "/tmp"  # noqa: S108
NAMES = [c["metadata"]["name"] for c in CONFIGS]
SERVICE_MODULES = [name for name in NAMES if name not in {"dependencies", SIDECAR["module"]}]
VALIDATOR = jsonschema.Draft7Validator(json.loads(SKAFFOLD_SCHEMA.read_text()))


def variants() -> list[tuple[str, str, dict[str, Any]]]:
    """(module, profile or "", config with that profile's patches applied)."""
    found = []
    for config in CONFIGS:
        found.append((config["metadata"]["name"], "", config))
        for profile in config.get("profiles", []):
            patched = apply_patches(config, profile.get("patches", []))
            found.append((config["metadata"]["name"], profile["name"], patched))
    return found


VARIANTS = variants()


def variant_id(variant: tuple[str, str, dict[str, Any]]) -> str:
    return f"{variant[0]}-{variant[1] or 'base'}"


def test_modules() -> None:
    assert len(NAMES) == len(set(NAMES)), "two configs share a metadata.name"
    assert {"dependencies", SIDECAR["module"], "identity", "catalog", "orders"} <= set(NAMES)
    for config in CONFIGS:
        version = config["apiVersion"]
        match = re.fullmatch(r"skaffold/v4beta(\d+)", version)
        assert match, version
        assert int(match.group(1)) >= 13, version
        assert config["kind"] == "Config"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_config_matches_the_v4beta14_schema(variant: tuple[str, str, dict[str, Any]]) -> None:
    errors = sorted(VALIDATOR.iter_errors(variant[2]), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors)


def test_the_schema_catches_a_typo() -> None:
    broken = copy.deepcopy(skaffold_config("identity"))
    broken["deploy"]["helm"]["releases"][0]["chartpath"] = "charts/identity"
    assert list(VALIDATOR.iter_errors(broken))


def test_every_config_builds_the_same_way() -> None:
    """Modules are built together: one tag policy and one local builder for all of them."""
    builds = {
        json.dumps({k: v for k, v in c["build"].items() if k != "artifacts"}, sort_keys=True) for c in CONFIGS
    }
    assert len(builds) == 1, builds


def test_required_configs_exist() -> None:
    for config in CONFIGS:
        for item in config.get("requires", []):
            assert "path" not in item, "requires stays inside this file"
            assert "git" not in item, "requires stays inside this file"
            assert set(item["configs"]) <= set(NAMES), item


def test_artifacts_build_from_the_root_with_the_one_dockerfile() -> None:
    images = []
    for config in CONFIGS:
        for artifact in config.get("build", {}).get("artifacts", []):
            images.append(artifact["image"])
            assert artifact["context"] == "."
            assert artifact["docker"]["dockerfile"] == "Dockerfile"
            assert (REPO / artifact["context"] / "Dockerfile").is_file()
    assert sorted(images) == sorted(["mesh/meshauth-sidecar", *(f"mesh/{s}" for s in SERVICE_MODULES)])
    sidecar = skaffold_config(SIDECAR["module"])["build"]["artifacts"][0]
    assert sidecar["docker"] == {"dockerfile": "Dockerfile", "target": "sidecar"}


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_referenced_file_exists(variant: tuple[str, str, dict[str, Any]]) -> None:
    config = variant[2]
    for path in config.get("manifests", {}).get("rawYaml", []):
        assert (REPO / path).is_file(), f"rawYaml {path} does not exist"
    for release in config.get("deploy", {}).get("helm", {}).get("releases", []):
        if "chartPath" in release:
            assert (REPO / release["chartPath"] / "Chart.yaml").is_file(), release["chartPath"]
        else:
            assert release["remoteChart"]
            assert release["repo"].startswith("https://")
            assert release["version"]
        for values in release.get("valuesFiles", []):
            assert (REPO / values).is_file(), f"values file {values} does not exist"


def test_dependencies_apply_exactly_what_k8s_kustomization_lists() -> None:
    kustomization = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    expected = [f"k8s/{path}" for path in kustomization["resources"]]
    config = skaffold_config("dependencies")
    assert config["manifests"]["rawYaml"] == expected
    assert "kubectl" in config["deploy"]


def test_dependencies_wait_for_the_bootstrap_job_before_the_services() -> None:
    jobs = [
        doc
        for path in skaffold_config("dependencies")["manifests"]["rawYaml"]
        for doc in yaml.safe_load_all((REPO / path).read_text())
        if doc and doc["kind"] == "Job"
    ]
    assert jobs, "the dependencies apply no Job"
    (hook,) = skaffold_config("dependencies")["deploy"]["kubectl"]["hooks"]["after"]
    command = hook["host"]["command"][-1]
    for job in jobs:
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        assert f"--namespace {namespace} wait --for=condition=complete job/{name} " in command


def test_monitoring_profile_installs_kube_prometheus_stack_with_our_values() -> None:
    config = skaffold_config("dependencies")
    (profile,) = [p for p in config["profiles"] if p["name"] == "monitoring"]
    releases = apply_patches(config, profile["patches"])["deploy"]["helm"]["releases"]
    (stack,) = releases
    assert stack["remoteChart"] == "kube-prometheus-stack"
    assert stack["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(stack["version"]))
    assert stack["valuesFiles"] == ["k8s/monitoring/kube-prometheus-stack-values.yaml"]
    for name in SERVICE_MODULES:
        assert "monitoring" in [p["name"] for p in skaffold_config(name)["profiles"]], name


# --- the service releases against their charts ----------------------------------------------------


def artifact_key(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", image)


@pytest.mark.parametrize("name", SERVICE_MODULES)
def test_release_sets_both_images_from_the_built_artifacts(name: str) -> None:
    release = skaffold_config(name)["deploy"]["helm"]["releases"][0]
    own, sidecar = artifact_key(f"mesh/{name}"), artifact_key("mesh/meshauth-sidecar")
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{own}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{own}}}}}",
        "auth.sidecar.image.repository": f"{{{{.IMAGE_REPO_{sidecar}}}}}",
        "auth.sidecar.image.tag": f"{{{{.IMAGE_TAG_{sidecar}}}}}",
    }
    assert release["namespace"] == "mesh"


def release_values(name: str, profile: str = "") -> dict[str, Any]:
    """What skaffold hands helm for a module: overrides, then the templates with sample results."""
    config = skaffold_config(name)
    if profile:
        (found,) = [p for p in config["profiles"] if p["name"] == profile]
        config = apply_patches(config, found["patches"])
    release = config["deploy"]["helm"]["releases"][0]
    values = copy.deepcopy(release.get("overrides", {}))
    for key, value in release.get("setValues", {}).items():
        set_dotted(values, key, value)
    for key, template in release["setValueTemplates"].items():
        set_dotted(values, key, "mesh/sample" if "IMAGE_REPO_" in template else "0123abcd")
    return values


@pytest.mark.parametrize("name", SERVICE_MODULES)
@pytest.mark.parametrize("profile", ["", "monitoring"])
def test_every_value_skaffold_sets_is_a_key_of_the_chart(name: str, profile: str) -> None:
    chart_values = yaml.safe_load((REPO / "charts" / name / "values.yaml").read_text())
    values = release_values(name, profile)
    free_maps = {"env"}  # NAME: value maps the chart documents as open
    for dotted in flatten(values):
        if dotted.split(".")[0] in free_maps:
            continue
        assert has_dotted(chart_values, dotted), f"charts/{name}/values.yaml has no {dotted}"
    if profile == "monitoring":
        for key in ("serviceMonitor", "prometheusRule", "dashboard"):
            assert values["monitoring"][key]["enabled"] is True


@pytest.fixture(scope="module")
def chart_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The charts in a temporary directory (dependency_update writes into the chart)."""
    workdir = tmp_path_factory.mktemp("delivery-charts")
    shutil.copytree(
        REPO / "charts", workdir / "charts", ignore=shutil.ignore_patterns("charts", "Chart.lock", "*.tgz")
    )
    return workdir / "charts"


def render(chart_copy: Path, name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    chart_dir = chart_copy / name
    if not (chart_dir / "charts").exists():
        helm.dependency_update(chart_dir)
    out = helm.Chart.load(chart_dir).render(values=values, name=name, namespace="mesh", is_install=True)
    return [
        doc
        for path, text in out.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def app_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (app,) = [c for c in spec["containers"] if c["name"] == "app"]
    return {"app": app, "pod": spec}


@pytest.mark.parametrize("name", SERVICE_MODULES)
@pytest.mark.parametrize("profile", ["", "monitoring"])
def test_release_values_render_with_the_chart(chart_copy: Path, name: str, profile: str) -> None:
    docs = render(chart_copy, name, release_values(name, profile))
    found = app_container(docs)
    # Local images: the artifact's name as built, no registry in front.
    assert found["app"]["image"] == "mesh/sample:0123abcd"
    sidecars = [c for c in found["pod"].get("initContainers", []) if c["name"] == "meshauth"]
    assert [c["image"] for c in sidecars] == ["mesh/sample:0123abcd"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    assert config_map["data"]["PYTHONPATH"] == POD_TMP
    kinds = {d["kind"] for d in docs}
    monitoring = {"ServiceMonitor", "PrometheusRule"}
    assert (monitoring <= kinds) if profile else not (monitoring & kinds)


# --- file sync --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_MODULES)
def test_sync_targets_the_writable_tmp_on_the_python_path(name: str) -> None:
    artifact = skaffold_config(name)["build"]["artifacts"][0]
    (rule,) = artifact["sync"]["manual"]
    assert rule == {"src": f"services/{name}/src/**/*.py", "dest": POD_TMP, "strip": f"services/{name}/src/"}
    assert (REPO / "services" / name / "src" / name / "__init__.py").is_file()
    (hook,) = artifact["sync"]["hooks"]["after"]
    command = hook["container"]["command"]
    assert command[:2] == ["sh", "-c"]
    # The installed package the hook completes the synced copy from: where the Dockerfile puts it.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in dockerfile
    assert re.search(r"^FROM python:3\.11[.\d]*-", dockerfile, re.MULTILINE)
    assert "--no-editable" in dockerfile
    assert command[2] == f"cp -Rn /app/.venv/lib/python3.11/site-packages/{name} /tmp/ && kill -HUP 1"


def test_skaffold_file_names_no_path_outside_the_repository() -> None:
    text = SKAFFOLD.read_text()
    assert "/work/" not in text
    assert "../" not in text
