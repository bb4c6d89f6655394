"""Helpers of the observability tests: the repository root and the external tools they run.

A plain module (like tests/charts/chartlib.py): every test directory has its own conftest, and two
modules both named `conftest` cannot be imported by name in one session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mesh.testing import tool_missing

REPO = Path(__file__).resolve().parents[2]


def require_tool(name: str) -> str:
    """The path of ``name`` (Debian package prometheus); skips locally, fails under CI=true."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path:
        return path
    tool_missing(f"{name} is not installed (Debian package prometheus)")
    raise AssertionError("unreachable")
