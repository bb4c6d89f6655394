"""The app charts' READMEs: bitnami's readme-generator-for-helm fills in their Parameters section from
the `## @param` comments of values.yaml.

The tool comes from npm, pinned with its lockfile (exact versions, integrity hashes) in
tests/charts/node, and is installed with `npm ci` into .mesh/tools/node the first time it is needed.
`python tests/charts/readmes.py` (or `make chart-readmes`) regenerates every app chart's README.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_TOOLS = Path(__file__).resolve().parent / "node"
NODE_PREFIX = REPO / ".mesh" / "tools" / "node"
GENERATOR = Path("node_modules") / "@bitnami" / "readme-generator-for-helm" / "bin" / "index.js"


class ToolUnavailable(RuntimeError):
    """node/npm is missing or `npm ci` failed."""


def ensure_node_tools() -> Path:
    """`npm ci` of tests/charts/node into .mesh/tools/node once; returns the generator's script."""
    lock = (NODE_TOOLS / "package-lock.json").read_text()
    stamp = NODE_PREFIX / "package-lock.json"
    script = NODE_PREFIX / GENERATOR
    if script.is_file() and stamp.exists() and stamp.read_text() == lock:
        return script
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        raise ToolUnavailable("node and npm are not installed (Debian: apt-get install nodejs npm)")
    NODE_PREFIX.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_TOOLS / name, NODE_PREFIX / name)
    result = subprocess.run(  # noqa: S603 - npm with fixed arguments
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(NODE_PREFIX)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not script.is_file():
        stamp.unlink(missing_ok=True)
        raise ToolUnavailable(f"npm ci failed: {result.stderr.strip()[-500:]}")
    return script


def generate(values: Path, readme: Path) -> subprocess.CompletedProcess[str]:
    """Run the generator on ``readme`` (rewritten in place) with ``values``."""
    node = shutil.which("node") or "node"
    return subprocess.run(  # noqa: S603 - node with the pinned script
        [node, str(ensure_node_tools()), "--values", str(values), "--readme", str(readme)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def app_charts() -> list[Path]:
    """Every application chart (the library chart's README is written by hand: it has no values)."""
    return sorted(
        path.parent
        for path in (REPO / "charts").glob("*/Chart.yaml")
        if "type: library" not in path.read_text()
    )


def main() -> int:
    charts = app_charts()
    for chart in charts:
        result = generate(chart / "values.yaml", chart / "README.md")
        if result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
            print(f"{chart.relative_to(REPO)}: " + ("; ".join(errors) or result.stderr.strip()[-300:]))
            return 1
        print(f"{chart.relative_to(REPO)}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
