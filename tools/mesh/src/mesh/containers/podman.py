"""The container engine, as `mesh images` and `mesh pods` drive it: podman with the project's settings.

Every call runs with ``CONTAINERS_CONF=containers/containers.conf`` (runc, explicit ulimits, host
network), so nothing under /etc has to change and a fresh machine behaves like this one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Podman", "PodmanError", "missing_tools"]

# What a fresh Debian needs for images and pods (`.ci/run` installs them).
REQUIRED_TOOLS = {
    "podman": "podman",
    "buildah": "buildah",
    "runc": "runc",
    # podman builds its pods' infra (pause) image from it
    "catatonit": "catatonit",
    "debootstrap": "debootstrap",
}


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its output."""


def missing_tools() -> list[str]:
    """Debian packages whose command is not on PATH."""
    return [package for command, package in REQUIRED_TOOLS.items() if shutil.which(command) is None]


@dataclass(frozen=True)
class Podman:
    """podman with the repository's containers.conf."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "containers" / "containers.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 600,
        input_bytes: bytes | None = None,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman <args>``; raise :class:`PodmanError` with its output when ``check`` fails."""
        proc = subprocess.run(  # noqa: S603 - argv built here, no shell
            ["podman", *args],  # noqa: S607 - podman from PATH, like every tool the Makefile runs
            env=self.env(),
            capture_output=capture,
            text=input_bytes is None,
            input=input_bytes,
            timeout=timeout,
            check=False,
        )
        if input_bytes is not None:
            proc.stdout = proc.stdout.decode(errors="replace") if proc.stdout else ""
            proc.stderr = proc.stderr.decode(errors="replace") if proc.stderr else ""
        if check and proc.returncode != 0:
            output = f"{proc.stdout or ''}{proc.stderr or ''}".strip()
            raise PodmanError(f"podman {' '.join(args[:3])} … failed (exit {proc.returncode}):\n{output}")
        return proc

    def stream(self, args: Sequence[str], log: Path | None = None) -> int:
        """Run a long podman command (a build) with its output in ``log``; returns the exit code."""
        if log is None:
            return subprocess.run(["podman", *args], env=self.env(), check=False).returncode  # noqa: S603, S607
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            return subprocess.run(  # noqa: S603
                ["podman", *args],  # noqa: S607
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode

    def image_exists(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def image_size(self, name: str) -> int:
        """Bytes the image takes unpacked (what `podman images` shows)."""
        data = json.loads(self.run("image", "inspect", name).stdout)
        return int(data[0]["Size"])

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        data = json.loads(self.run(kind, "inspect", name).stdout)
        result: dict[str, Any] = data[0] if isinstance(data, list) else data
        return result

    def names(self, kind: str, label: str) -> list[str]:
        """Names of pods, containers or volumes carrying ``label`` (key=value)."""
        if kind == "pod":
            out = self.run("pod", "ps", "--filter", f"label={label}", "--format", "{{.Name}}").stdout
        elif kind == "container":
            out = self.run("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}").stdout
        else:
            out = self.run("volume", "ls", "--filter", f"label={label}", "--format", "{{.Name}}").stdout
        return [line for line in out.splitlines() if line.strip()]
