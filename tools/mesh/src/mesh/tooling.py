"""The external tools that tests and `make bench` need, found or installed by the project itself.

A fresh machine is the reference: nothing here relies on a tool someone installed by hand, or on a
warm cache. Python tools come pinned with hashes (``mesh/pins/``) and go into a venv of their own
under ``.mesh/tools/``. System tools come from Debian: `.ci/run` installs them, and
:func:`ensure_wrk` installs wrk on demand when it runs as root.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "PINS",
    "ToolError",
    "checkov_version",
    "ensure_checkov",
    "ensure_haproxy",
    "ensure_nginx",
    "ensure_wrk",
    "find_uv",
]

PINS = Path(__file__).resolve().parent / "pins"


class ToolError(RuntimeError):
    """A tool could not be found or installed; the message says what to do."""


def find_uv() -> str | None:
    """The uv binary: the running one (`uv run` exports ``UV``), then PATH, then where `make uv` puts it."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(Path.home() / ".local/bin/uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def checkov_version() -> str:
    """The checkov version ``pins/checkov.txt`` installs."""
    match = re.search(r"^checkov==(\S+)", (PINS / "checkov.txt").read_text(), re.M)
    if match is None:
        raise ToolError("mesh/pins/checkov.txt pins no checkov version")
    return match.group(1)


def ensure_checkov(root: Path) -> Path:
    """checkov, installed once into ``root/.mesh/tools/checkov`` from ``pins/checkov.txt``.

    checkov's own pins conflict with the workspace's, so it cannot be a dev dependency: it gets a venv
    of its own, installed with `uv pip sync --require-hashes` (every file checked against the pins).
    A changed pin file reinstalls it. Needs the package index unless uv's cache holds the wheels.
    """
    pins = PINS / "checkov.txt"
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()
    tools = root / ".mesh" / "tools"
    venv = tools / "checkov"
    checkov, stamp = venv / "bin" / "checkov", venv / "pins.sha256"
    tools.mkdir(parents=True, exist_ok=True)
    # Two suites may want it at once (tests/scaffold runs the chart suite on a copy): one installs.
    with open(tools / "checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if checkov.is_file() and stamp.is_file() and stamp.read_text() == digest:
            return checkov
        uv = find_uv()
        if uv is None:
            raise ToolError("uv is not installed (make uv installs it)")
        shutil.rmtree(venv, ignore_errors=True)
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        python = str(venv / "bin" / "python")
        for argv in (
            [uv, "venv", "--quiet", "--python", "3.11", str(venv)],
            [uv, "pip", "sync", "--quiet", "--require-hashes", "--python", python, str(pins)],
        ):
            result = subprocess.run(  # noqa: S603 - uv with arguments built here
                argv, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            if result.returncode != 0:
                last = (result.stderr.strip() or "no output").splitlines()[-1]
                raise ToolError(f"installing checkov {checkov_version()} failed ({last}): is PyPI reachable?")
        stamp.write_text(digest)
        return checkov


def ensure_wrk() -> str | None:
    """wrk from PATH; when it is missing and this runs as root with apt-get, installed from Debian.

    None when neither works: `make bench` then falls back to :mod:`mesh.loadgen`.
    """
    return _ensure_debian("wrk", "wrk")


def ensure_nginx() -> str | None:
    """nginx (`make bench`'s reference proxy), installed from Debian like :func:`ensure_wrk`; or None."""
    return _ensure_debian("nginx", "nginx")


def ensure_haproxy() -> str | None:
    """HAProxy (the sidecar's C engine, ``MESHAUTH_SIDECAR_ENGINE=haproxy``), from Debian; or None."""
    return _ensure_debian("haproxy", "haproxy")


def _which(command: str) -> str | None:
    # Debian puts daemons in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


def _ensure_debian(command: str, package: str) -> str | None:
    found = _which(command)
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print(f"[mesh] {command} is missing: installing it (apt-get install {package})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        if subprocess.run(argv, env=env, check=False, timeout=600).returncode != 0:  # noqa: S603
            return None
    return _which(command)
