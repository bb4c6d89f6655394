"""schemathesis against the running mesh: no request, valid or not, gets a 5xx, and every answer is one
the OpenAPI document promises (status, content type, headers, body schema).

Bounded: a fixed number of examples per operation and a fixed seed, so a run is repeatable and takes
about a minute. Sidecar mode only: it is the pods' shape, and there the sidecar answers what gunicorn
would answer in HTML (an oversized request line) in JSON; the other suites cover in-process mode.

Checks: all of schemathesis' except ``positive_data_acceptance``, which expects every schema-valid
body to succeed; the services rightly refuse some (a weak password, an unknown sku, short stock) with
the documented 4xx. The stateful checks need links the documents do not declare and do not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from securitylib import bearer, introspector_token, orders_service_token, signup_and_login, staff_token

from mesh.fleet import Fleet
from mesh.testing import tool_missing

MAX_EXAMPLES = 15
SEED = 20261202


def schemathesis(
    fleet: Fleet, service: str, token: str, workdir: Path, *selection: str
) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        tool_missing("schemathesis (`st`) is not installed; `make sync` installs it")
    ((name, value),) = bearer(token).items()
    argv = [
        st,
        "run",
        f"{fleet.url(service)}/api/v1/openapi.json",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--phases=examples,coverage,fuzzing",
        "--workers=1",
        "--no-shrink",
        "--no-color",
        "--generation-database=none",
        "--request-timeout=30",
        f"--header={name}: {value}",
        *selection,
    ]
    # In a directory of its own: schemathesis keeps a cache in the working directory.
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )


@pytest.mark.parametrize(
    ("service", "who", "selection"),
    [
        ("identity", "user", ["--exclude-path-regex=introspect"]),
        ("identity", "introspector", ["--include-path-regex=introspect"]),
        ("catalog", "staff", ["--exclude-path-regex=reservations"]),
        ("catalog", "orders-service", ["--include-path-regex=reservations"]),
        ("orders", "user", []),
    ],
)
def test_the_api_keeps_its_openapi_promises(
    sidecar_mesh: Fleet, service: str, who: str, selection: list[str], tmp_path: Path
) -> None:
    token = {
        "user": lambda: signup_and_login(sidecar_mesh).access_token,
        "staff": lambda: staff_token(sidecar_mesh),
        "introspector": lambda: introspector_token(sidecar_mesh),
        "orders-service": lambda: orders_service_token(sidecar_mesh),
    }[who]()
    result = schemathesis(sidecar_mesh, service, token, tmp_path, *selection)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested:" in result.stdout  # it ran operations, not just fetched the document
