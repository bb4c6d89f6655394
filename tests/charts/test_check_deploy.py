"""`manage.py check --deploy` with the environment the production chart gives each app container.

The settings the checks look at (secure cookies, DEBUG, ALLOWED_HOSTS, SECRET_KEY) come from what the
chart renders, not from a hand-written imitation. Two checks are silenced in meshkit.settings, each for
a stated reason: W008 (https redirect: the ingress terminates TLS; in-cluster calls and probes are plain
http) and W004 (HSTS: the ingress's job, or set SECURE_HSTS_SECONDS).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chartlib import REPO, Renderer, app_chart_names, scenario_values
from test_contract import container, env_of


def secret_value(name: str) -> str:
    """A production-shaped stand-in for what the chart takes from a Secret (valueFrom)."""
    if name.endswith("DATABASE_URL"):
        return "postgres://svc:secret@db.internal:6432/mesh"
    return secrets.token_urlsafe(50)


def production_env(renderer: Renderer, chart: str, mode: str) -> dict[str, str]:
    values: dict[str, Any] = {**scenario_values(chart, "production"), "auth": {"mode": mode}}
    rendered = renderer.render(chart, values)
    env: dict[str, str] = {}
    for name, value in env_of(rendered, container(rendered, "Deployment", "app")).items():
        env[name] = value if isinstance(value, str) else secret_value(name)
    return env


@pytest.mark.parametrize("mode", ["sidecar", "inprocess"])
@pytest.mark.parametrize("chart", app_chart_names())
def test_check_deploy_is_clean_with_the_production_chart(
    renderer: Renderer, chart: str, mode: str, tmp_path: Path
) -> None:
    env = production_env(renderer, chart, mode)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # the pod's emptyDir
    env.setdefault("SECRET_KEY", secret_value("SECRET_KEY"))
    env.setdefault("DATABASE_URL", secret_value("DATABASE_URL"))
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    result = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy", "--fail-level", "WARNING"],
        env={**base, **env, "DJANGO_SETTINGS_MODULE": f"{chart}.settings"},
        cwd=REPO / "services" / chart,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (2 silenced)." in result.stdout
