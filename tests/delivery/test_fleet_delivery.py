"""Every service of mesh.toml has what delivery needs: workflow, chart, skaffold module, an image.

These read files other engineers own (charts, the Dockerfile, mesh.toml): a missing one fails. Every
image builds from the repository's one Dockerfile: the `service` target with the service's name, or
the `sidecar` target.
"""

from __future__ import annotations

from typing import Any

import pytest
from deliverylib import REPO, SELF, SIDECAR, WORKFLOWS, load_yaml, skaffold_config

from mesh.registry import Service, load_registry

REGISTRY = load_registry(REPO)
SERVICES = list(REGISTRY)
# The fleet the issue names; mesh.toml must grow to hold it.
EXPECTED = {"identity": 8001, "catalog": 8002, "orders": 8003}
SHARED_PATHS = [
    "libs/**",
    "Dockerfile",
    ".dockerignore",
    "uv.lock",
    "charts/django-service/**",
    ".github/workflows/_django-service.yml",
    ".github/workflows/_deploy.yml",
]


def test_registry_holds_the_fleet() -> None:
    assert {s.name: s.port for s in SERVICES if s.name in EXPECTED} == EXPECTED


def caller(name: str) -> dict[str, Any]:
    path = WORKFLOWS / f"{name}.yml"
    assert path.is_file(), f"no workflow {path.relative_to(REPO)}"
    data: dict[str, Any] = load_yaml(path)
    return data


def the_call(workflow: dict[str, Any]) -> dict[str, Any]:
    calls = [job for job in workflow["jobs"].values() if job.get("uses")]
    assert len(calls) == 1, "a caller is one job that calls the reusable workflow"
    assert calls[0]["uses"] == f"{SELF}.github/workflows/_django-service.yml"
    with_: dict[str, Any] = calls[0]["with"]
    return with_


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_workflow_triggers_on_what_affects_it(service: Service) -> None:
    workflow = caller(service.name)
    on = workflow["on"]
    expected = {
        f"services/{service.name}/**",
        f"charts/{service.name}/**",
        f".github/workflows/{service.name}.yml",
        *SHARED_PATHS,
    }
    for event in ("push", "pull_request"):
        paths = set(on[event]["paths"])
        assert expected <= paths, f"{event}: missing {expected - paths}"
        others = {s.name for s in SERVICES} - {service.name}
        assert not any(
            p.startswith(f"services/{o}/") or p.startswith(f"charts/{o}/") for o in others for p in paths
        )
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_workflow_passes_its_own_pieces(service: Service) -> None:
    with_ = the_call(caller(service.name))
    assert with_["service"] == service.name
    assert with_["package"] == service.name
    assert with_["package-dir"] == f"services/{service.name}"
    assert with_["chart"] == f"charts/{service.name}"
    # The reusable workflow's default target, `service`, built with SERVICE=<service>.
    assert with_.get("target", "service") == "service"
    assert with_["smoke-path"].startswith("/api/v1/")
    for key in ("package-dir", "chart"):
        assert (REPO / with_[key]).exists(), f"{service.name}: {with_[key]} does not exist"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_workflow_queues_per_service_and_cancels_only_pull_requests(service: Service) -> None:
    concurrency = caller(service.name)["concurrency"]
    assert concurrency["group"].startswith("${{ github.workflow }}-")
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_has_chart_and_package(service: Service) -> None:
    assert (REPO / "charts" / service.name / "Chart.yaml").is_file()
    assert (REPO / "charts" / service.name / "values.yaml").is_file()
    assert (REPO / "services" / service.name / "pyproject.toml").is_file()


def test_sidecar_workflow_builds_the_sidecar_image_without_chart_or_deploy() -> None:
    workflow = caller(SIDECAR["workflow"])
    with_ = the_call(workflow)
    assert with_["package-dir"] == SIDECAR["dir"]
    assert with_["target"] == "sidecar"
    assert with_.get("chart", "") == ""
    # Its staging/production jobs are skipped (no chart), but GitHub checks the permissions every
    # called job requests when it loads the caller: without id-token the run fails at startup.
    assert next(iter(workflow["jobs"].values()))["permissions"]["id-token"] == "write"
    for event in ("push", "pull_request"):
        assert {f"{SIDECAR['dir']}/**", "Dockerfile", ".dockerignore"} <= set(workflow["on"][event]["paths"])


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_has_its_skaffold_module(service: Service) -> None:
    config = skaffold_config(service.name)
    artifacts = [a["image"] for a in config["build"]["artifacts"]]
    assert artifacts == [f"mesh/{service.name}"]
    assert config["build"]["artifacts"][0]["docker"] == {
        "dockerfile": "Dockerfile",
        "target": "service",
        "buildArgs": {"SERVICE": service.name},
    }
    (release,) = config["deploy"]["helm"]["releases"]
    assert release["name"] == service.name
    assert release["chartPath"] == f"charts/{service.name}"
    (forward,) = config["portForward"]
    assert (forward["resourceName"], forward["port"], forward["localPort"]) == (
        service.name,
        8000,
        service.port,
    )


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_skaffold_module_requires_what_the_service_calls(service: Service) -> None:
    required = {
        name for item in skaffold_config(service.name).get("requires", []) for name in item["configs"]
    }
    # Every service verifies identity's tokens against its JWKS, and calls whom mesh.toml says.
    expected = {"dependencies", SIDECAR["module"], *service.calls} | ({"identity"} - {service.name})
    assert required == expected
