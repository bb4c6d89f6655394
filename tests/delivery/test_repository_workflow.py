"""The repository workflow: `make test` on GitHub for every change outside one service, and one
required status that sums it up.

GitHub itself cannot run here: its shell steps are run with bash, with the inputs GitHub would give.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deliverylib import REPO, WORKFLOWS, load_yaml, run

WORKFLOW = WORKFLOWS / "repository.yml"
SCOPE = REPO / ".ci" / "scope"


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(WORKFLOW)
    return data


def scope(paths: list[str]) -> str:
    result = run(["bash", str(SCOPE)], input="".join(f"{p}\n" for p in paths))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_it_reports_on_every_pull_request_and_push_to_main() -> None:
    """A required status must be reported on every pull request: a `paths:` filter on the workflow
    would leave it pending forever on a pull request that touches only one service."""
    on = workflow()["on"]
    assert on["push"] == {"branches": ["main"]}
    assert not on["pull_request"], "no filter on pull_request: the scope job decides"
    assert "merge_group" in on
    assert "workflow_dispatch" in on


def test_the_test_job_runs_the_readme_command_through_ci_run() -> None:
    test = workflow()["jobs"]["test"]
    assert test["needs"] == "changes"
    assert test["if"] == "needs.changes.outputs.repository == 'true'"
    assert [step["run"] for step in test["steps"] if "run" in step] == ["bash .ci/run"]
    # .ci/run ends with the README's test command.
    ci_run = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_run[-1] == "make test"
    assert "make test" in (REPO / "README.md").read_text()


@pytest.mark.parametrize(
    "paths",
    [
        ["tools/mesh/src/mesh/cli.py"],
        ["tests/e2e/test_journeys.py"],
        ["libs/meshauth/src/meshauth/verify.py"],
        ["charts/django-service/templates/_pod.tpl"],
        ["charts/orders/values.yaml"],
        ["k8s/namespace.yaml"],
        ["mesh.toml"],
        ["Makefile"],
        ["uv.lock"],
        [".ci/run"],
        [".github/workflows/orders.yml"],
        ["README.md"],
        ["services/orders/src/orders/api.py", "mesh.toml"],
        ["services/orders/src/orders/api.py", "services/catalog/src/catalog/api.py"],
    ],
)
def test_changes_outside_one_service_run_everything(paths: list[str]) -> None:
    assert scope(paths) == "repository=true"


@pytest.mark.parametrize(
    "paths",
    [
        ["services/orders/src/orders/api.py"],
        ["services/orders/src/orders/api.py", "services/orders/tests/test_orders.py"],
        [],
    ],
)
def test_a_change_inside_one_service_is_left_to_its_own_workflow(paths: list[str]) -> None:
    assert scope(paths) == "repository=false"


def test_every_top_level_entry_but_services_runs_everything() -> None:
    """A new top-level directory or file is covered without anyone remembering this workflow."""
    tops = sorted(p.name for p in REPO.iterdir() if p.name not in {".git", "services"})
    assert {"tools", "tests", "libs", "charts", "k8s", "mesh.toml", "Makefile", "uv.lock", ".ci"} <= set(tops)
    for top in tops:
        example = f"{top}/some/file" if (REPO / top).is_dir() else top
        assert scope([example]) == "repository=true", example


def test_the_scope_job_feeds_git_diff_to_ci_scope() -> None:
    changes = workflow()["jobs"]["changes"]
    assert changes["outputs"]["repository"] == "${{ steps.scope.outputs.repository }}"
    checkout = changes["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0, "the diff needs the base commit"
    script = changes["steps"][1]["run"]
    assert "git diff --name-only" in script
    assert '.ci/scope < "$RUNNER_TEMP/changed"' in script


def required_step(changes: str, test: str, needed: str) -> subprocess.CompletedProcess[str]:
    step = workflow()["jobs"]["required"]["steps"][0]
    env = {**os.environ, "CHANGES": changes, "TEST": test, "NEEDED": needed}
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, check=False
    )


def test_required_runs_always_after_every_other_job() -> None:
    jobs = workflow()["jobs"]
    required = jobs["required"]
    assert required["if"] == "always()"
    assert set(required["needs"]) == set(jobs) - {"required"}
    assert required["permissions"] == {}


@pytest.mark.parametrize(
    ("changes", "test", "needed", "passes"),
    [
        ("success", "success", "true", True),
        ("success", "skipped", "false", True),
        ("success", "failure", "true", False),
        ("success", "cancelled", "true", False),
        ("success", "skipped", "true", False),
        ("failure", "skipped", "", False),
        ("success", "failure", "false", False),
    ],
)
def test_required_fails_when_a_needed_job_did_not_succeed(
    changes: str, test: str, needed: str, passes: bool
) -> None:
    result = required_step(changes, test, needed)
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    if not passes:
        assert "::error::" in result.stdout


def test_docs_name_the_required_status() -> None:
    docs = (REPO / "docs" / "delivery.md").read_text()
    assert "repository.yml" in docs
    assert "`required`" in docs


def test_the_scope_script_is_executable() -> None:
    assert os.access(SCOPE, os.X_OK)
    assert Path(SCOPE).read_text().startswith("#!/usr/bin/env bash")
