"""`mesh new-service` end to end: generate a service into a copy of the repository, then run on that
copy, with no edit by hand, everything the repository runs: the new service's own tests, ruff,
the chart, workflow and consistency suites, and `mesh up` serving the whole fleet with the new one.

The copy is the working tree as it is (tracked and untracked files, not ignored ones), so work in
progress of other engineers is part of what must keep passing. It gets its own venv (`uv sync
--offline --locked`, a few seconds): the workspace packages of the shared venv are installed
editable from the shared tree, so only a venv of the copy's own imports the copy's sources, and
`--locked` proves on the way that the generated uv.lock matches the generated pyproject files.

`mesh new-service` runs with a uv cache of its own that starts empty, as on a fresh machine: it must
lock from the package index. The copy's venv then comes from the cache `make sync` filled (the new
service needs nothing the workspace has not installed already); under `.ci/run` that cache, too,
started empty.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import httpx
import psutil
import pytest

from mesh.bootstrap import drop_database
from mesh.registry import load_registry
from mesh.scaffold.names import next_port
from mesh.testing import free_port_offset, shared_tmpdir

REPO = Path(__file__).resolve().parents[2]
REGISTRY = load_registry(REPO)
# A name no service has yet (the test must keep working when one of them becomes real).
NAME = next(n for n in ("payments", "invoices", "shipments", "ledger") if n not in REGISTRY.services)
READS = ["catalog"] if "catalog" in REGISTRY.services else []
PASSWORD = "correct horse battery staple"


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    assert Path(found).is_file(), "uv is required (make uv)"
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points at the shared venv, a database or a session."""
    dropped = ("VIRTUAL_ENV", "MESH_ROOT", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("DATABASE_", "MESHAUTH_", "PYTEST_"))
    }
    return {**env, "UV_PYTHON_DOWNLOADS": "never", **extra}


def run(argv: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout, check=False
    )


def copy_worktree(source: Path, target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        path = source / relative
        if path.is_file():  # a file deleted in the working tree is still in the index
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not {".venv", ".mesh", "__pycache__"} & set(p.relative_to(root).parts)
    }


@dataclass
class Generated:
    root: Path
    before: dict[str, bytes]
    output: str

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    with shared_tmpdir("mesh-scaffold-") as home:
        yield from _generate(home / "repo", tmp_path_factory)


def _generate(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    started = time.monotonic()
    cache = tmp_path_factory.mktemp("uv-cache")  # empty: a fresh machine
    copy_worktree(REPO, root)
    # Tools tests/charts installed already (readme-generator-for-helm's npm tools, checkov): the copy
    # reuses them (their fresh installs are tested there and in tools/mesh).
    (root / ".mesh" / "tools").mkdir(parents=True)
    for tool in ("node", "checkov"):
        if (REPO / ".mesh" / "tools" / tool).is_dir():
            (root / ".mesh" / "tools" / tool).symlink_to(REPO / ".mesh" / "tools" / tool)
    before = snapshot(root)
    created = run(
        [sys.executable, "-m", "mesh", "new-service", NAME, *[f"--reads={r}" for r in READS]],
        root,
        300,
        UV_CACHE_DIR=str(cache),
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert any(cache.iterdir()), "the lock must have come from the package index"
    shutil.rmtree(cache)
    synced = run([uv(), "sync", "--offline", "--locked", "--all-packages", "--quiet"], root, 600)
    assert synced.returncode == 0, synced.stderr
    print(f"copy, generate, uv sync: {time.monotonic() - started:.1f} s")
    # The copy runs its own embedded PostgreSQL from its venv, hence not under pytest's tmp tree; its
    # venv is hundreds of MB, and shared_tmpdir removes it afterwards.
    yield Generated(root, before, created.stdout)


def test_it_changes_only_its_own_files_and_the_fleets_registries(generated: Generated) -> None:
    after = snapshot(generated.root)
    assert set(generated.before) <= set(after), "no file may disappear"
    changed = {path for path in generated.before if after[path] != generated.before[path]}
    assert changed == {
        "mesh.toml",
        "pyproject.toml",
        "uv.lock",
        "skaffold.yaml",
        "README.md",  # the fleet's table
        "k8s/db-bootstrap/bootstrap.yaml",
        "k8s/db-bootstrap/dev-secrets.yaml",
    }
    own = (f"services/{NAME}/", f"charts/{NAME}/", f".github/workflows/{NAME}.yml")
    new = set(after) - set(generated.before)
    assert all(path.startswith(own) for path in new), sorted(new)
    assert f"services/{NAME}/src/{NAME}/items/migrations/0001_initial.py" in new
    assert f"charts/{NAME}/files/dashboard.json" in new
    service = load_registry(generated.root)[NAME]
    assert service.port == next_port(REGISTRY)  # the next free one above the highest
    assert (service.schema, service.reads, service.calls) == (NAME, tuple(READS), ())
    assert f"created {NAME} (port {service.port}" in generated.output
    # Everything it wrote besides the service's code is what `make generate` writes for the new mesh.toml.
    check = run([generated.python, "-m", "mesh", "generate", "--check"], generated.root, 120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_new_services_tests_pass_with_only_its_own_package_installed(
    generated: Generated, admin_url: str, tmp_path: Path
) -> None:
    # As CI runs a service's suite: `uv sync --locked --package <svc>` must be all it needs.
    venv = tmp_path / "venv"
    synced = run(
        [uv(), "sync", "--offline", "--locked", "--package", NAME, "--quiet"],
        generated.root,
        300,
        UV_PROJECT_ENVIRONMENT=str(venv),
    )
    assert synced.returncode == 0, synced.stderr
    result = run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"],
        generated.root / "services" / NAME,
        300,
        TEST_DATABASE_URL=admin_url,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b(1[5-9]|[2-9]\d) passed\b", summary), summary
    assert "skipped" not in summary, summary
    assert "error" not in summary, summary


def test_ruff_deptry_and_mypy_are_clean_and_makemigrations_has_nothing_to_add(generated: Generated) -> None:
    ruff = str(generated.root / ".venv" / "bin" / "ruff")
    # The new service only: the rest of the copy is others' work in progress, linted by `make lint`.
    service = f"services/{NAME}"
    for argv in ([ruff, "check", service], [ruff, "format", "--check", service]):
        result = run(argv, generated.root, 120)
        assert result.returncode == 0, result.stdout + result.stderr
    # Its pyproject declares what its code imports, as `make lint` requires of every package.
    deptry = run([str(generated.root / ".venv" / "bin" / "deptry"), "src"], generated.root / service, 120)
    assert deptry.returncode == 0, deptry.stdout + deptry.stderr
    # And mypy strict with the Django plugin passes on it, as on the other services.
    mypy = run(
        [str(generated.root / ".venv" / "bin" / "mypy")],
        generated.root / service,
        300,
        MESH_LOCAL_DEV="1",
        DATABASE_URL="postgres://nobody@127.0.0.1:9/none",
        **{f"{owner.upper()}_READ_DATABASE_URL": "postgres://nobody@127.0.0.1:9/none" for owner in READS},
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    # The shipped migration is exactly what Django would write for the shipped model.
    result = run(
        [generated.python, "manage.py", "makemigrations", "--check", "--dry-run"],
        generated.root / "services" / NAME,
        120,
        MESH_LOCAL_DEV="1",
        DATABASE_URL="postgres://nobody@127.0.0.1:9/none",
        **{f"{owner.upper()}_READ_DATABASE_URL": "postgres://nobody@127.0.0.1:9/none" for owner in READS},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def failures(report: Path) -> dict[str, str]:
    """``{classname::name: failure message}`` of a pytest JUnit XML report."""
    found = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own report
        for problem in [*case.iter("failure"), *case.iter("error")]:
            found[f"{case.get('classname')}::{case.get('name')}"] = problem.get("message") or ""
    return found


def test_chart_workflow_and_consistency_suites_pass_on_the_copy(generated: Generated, tmp_path: Path) -> None:
    # The whole suites, not only the new chart's cases: many checks span every chart and service.
    report = tmp_path / "report.xml"
    result = run(
        [
            generated.python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-v",
            f"--junitxml={report}",
            "tests/charts",
            "tests/delivery",
            "tests/observability/test_generated.py",
            "tests/observability/test_runbooks.py",
        ],
        generated.root,
        600,
    )
    output = result.stdout[-6000:] + result.stderr[-2000:]
    assert not failures(report), output
    assert result.returncode == 0, output
    passed_for_new = [line for line in result.stdout.splitlines() if NAME in line and "PASSED" in line]
    # lint, every ci/ scenario, values, contract, promtool, its image target, workflow and skaffold module,
    # the README (bitnami's generator against the scaffolder's), the alerts' runbook sections
    assert len(passed_for_new) >= 30, "\n".join(passed_for_new)


def test_the_new_services_alerts_fire_and_stay_silent_as_designed(generated: Generated) -> None:
    result = run(
        [
            generated.python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/observability/test_alert_rules.py",
            "-k",
            f"{NAME} or exercised",
        ],
        generated.root,
        600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d{2,} passed\b", result.stdout.strip().splitlines()[-1])


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("mesh up exited early:\n" + "".join(lines))
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(lines))


def test_mesh_up_serves_the_whole_fleet_with_the_new_service(generated: Generated, admin_url: str) -> None:
    offset = free_port_offset(load_registry(generated.root))
    database = f"test_scaffold_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [generated.python, "-m", "mesh", "up", "--port-offset", str(offset), "--database", database],
        cwd=generated.root,
        env=clean_env(DATABASE_ADMIN_URL=admin_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = read_until(proc, "press Ctrl-C to stop", timeout=180)
        fleet = load_registry(generated.root)
        for service in fleet:
            assert f"{service.name}: ready on http://127.0.0.1:{service.port + offset}" in output
        url = f"http://127.0.0.1:{fleet[NAME].port + offset}"
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok"

        # A real user of identity, through both sidecars, with the token identity signed.
        identity = f"http://127.0.0.1:{fleet['identity'].port + offset}"
        email = f"scaffold-{uuid.uuid4().hex[:8]}@example.com"
        signup = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
        assert signup.status_code == 201, signup.text
        tokens = httpx.post(f"{identity}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        assert httpx.get(f"{url}/api/v1/items", timeout=10).status_code == 401
        created = httpx.post(f"{url}/api/v1/items", json={"name": "first"}, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
        listed = httpx.get(f"{url}/api/v1/items", headers=auth, timeout=10)
        assert [item["name"] for item in listed.json()] == ["first"]
        assert httpx.get(f"{url}/api/v1/about", timeout=10).json()["service"] == NAME

        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=90)[0]
        assert proc.returncode == 0, rest
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        drop_database(admin_url, database)
