"""Helpers of the delivery tests: the workflows, skaffold.yaml, and the external checkers they run.

A missing checker skips locally but fails under CI=true, so CI can never pass without running it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mesh.testing import tool_missing as mesh_tool_missing

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONS = REPO / ".github" / "actions"
REUSABLE = WORKFLOWS / "_django-service.yml"
DEPLOY = WORKFLOWS / "_deploy.yml"
SKAFFOLD = REPO / "skaffold.yaml"
SKAFFOLD_SCHEMA = HERE / "schemas" / "skaffold-v4beta14.json"

# The sidecar image has no chart and no entry in mesh.toml: it ships inside every service's pod.
SIDECAR = {"workflow": "meshauth-sidecar", "module": "meshauth-sidecar", "dir": "libs/meshauth"}

# GitHub's self-repository syntax: `uses: $/path` is this repository at the commit that runs (no
# checkout needed, unlike `./path`, which zizmor's self-repository audit flags).
SELF = "$/"
# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")


def tool_missing(what: str) -> None:
    """A missing tool skips locally but fails in CI (CI=true); see docs/delivery.md (Tests)."""
    mesh_tool_missing(f"{what} is not available")


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # noqa: S603


def venv_tool(name: str) -> str | None:
    candidate = Path(sys.prefix) / "bin" / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def load_yaml(path: Path) -> Any:
    # GitHub reads `on:` as a string key; PyYAML (YAML 1.1) would read it as True.
    text = path.read_text()
    loader = yaml.SafeLoader
    data = yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoader
    if isinstance(data, dict) and True in data:
        data["on"] = data.pop(True)
    return data


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def action_files() -> list[Path]:
    return sorted(ACTIONS.glob("*/action.yml")) + sorted(ACTIONS.glob("*/action.yaml"))


def uses_lines(path: Path) -> list[tuple[int, str, str]]:
    """Every `uses:` in a workflow or action file: (line number, reference, rest of the line)."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if match:
            found.append((number, match.group(1).strip("\"'"), match.group(2)))
    return found


def skaffold_configs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(SKAFFOLD.read_text()) if doc]


def skaffold_config(name: str) -> dict[str, Any]:
    for config in skaffold_configs():
        if config["metadata"]["name"] == name:
            return config
    raise AssertionError(f"skaffold.yaml has no config (module) named {name!r}")


def apply_patches(document: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """A skaffold profile's JSON patches (RFC 6902 `add` and `replace`) applied to a copy of a config."""
    result: dict[str, Any] = json.loads(json.dumps(document))
    for patch in patches:
        assert patch["op"] in {"add", "replace"}, f"unsupported patch op in skaffold.yaml: {patch}"
        parts = [p.replace("~1", "/").replace("~0", "~") for p in patch["path"].lstrip("/").split("/")]
        target: Any = result
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), patch["value"])
        else:
            if patch["op"] == "replace":
                assert last in target, f"replace of a missing key: {patch['path']}"
            target[last] = patch["value"]
    return result


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        values = values.setdefault(key, {})
    values[keys[-1]] = value


def has_dotted(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def flatten(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of a nested mapping (maps under `env` count as leaves' parents)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths.extend(flatten(value, f"{path}."))
        else:
            paths.append(path)
    return paths
