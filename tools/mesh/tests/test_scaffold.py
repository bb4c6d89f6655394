"""`mesh new-service`: what it refuses (exit 2, nothing changed), that a failure half-way changes
nothing, that what it writes besides the service's code is `mesh generate`'s output, and that the
generated code is ruff-clean whatever the name. Every test works on a copy of the repository.

uv's cache is the module's own and starts empty, as on a fresh machine: a scaffolder that could only
lock from a warm cache fails here (see also the "fresh machine" tests below).

The end-to-end proof (the generated service's tests, the chart and delivery suites, `mesh up`) is
tests/scaffold/test_new_service.py.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mesh import cli
from mesh.generate import stale_files
from mesh.generate.templates import render, render_tree
from mesh.registry import find_root, load_registry
from mesh.scaffold import ConcurrentEdit, plan, prepare, transaction
from mesh.scaffold.plan import PlanError, ServiceSpec, lock
from mesh.scaffold.transaction import write_all_or_nothing

REPO = find_root(Path(__file__).parent)
RUFF = Path(sys.executable).parent / "ruff"


def copy_worktree(source: Path, target: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored): others' work included."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        if (source / relative).is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, target / relative)


@pytest.fixture(scope="module", autouse=True)
def cold_uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A uv cache of this module's own, empty at the start, so the first lock takes a fresh machine's path."""
    cache = tmp_path_factory.mktemp("uv-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UV_CACHE_DIR", str(cache))
        patch.delenv("UV_OFFLINE", raising=False)
        yield cache
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "repo"
    copy_worktree(REPO, root)
    return root


@pytest.fixture
def repo(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the repository, made the root `mesh` works on, and a git repository."""
    root = tmp_path / "repo"
    shutil.copytree(pristine, root, symlinks=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run([*git, *argv], cwd=root, check=True, capture_output=True)
    monkeypatch.setenv("MESH_ROOT", str(root))
    return root


def state(root: Path) -> dict[str, str]:
    """Every file and directory under root, with a hash of each file's bytes and its mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        if ".git" in path.relative_to(root).parts:
            continue
        key = str(path.relative_to(root))
        if path.is_dir():
            found[key + "/"] = "dir"
        else:
            found[key] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mode:o}"
    return found


def git_status(root: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def new_service(*argv: str) -> int:
    return cli.main(["new-service", *argv])


# -- refusals ----------------------------------------------------------------------------------------

REFUSED = [
    (["Payments"], "is not a valid service name"),
    (["pay-ments"], "is not a valid service name"),
    (["pay_ments"], "is not a valid service name"),
    (["1payments"], "is not a valid service name"),
    (["p"], "is not a valid service name"),
    (["p" * 32], "is not a valid service name"),
    (["pay ments"], "is not a valid service name"),
    (["payments;rm"], "is not a valid service name"),
    ([""], "is not a valid service name"),
    (["mesh"], "is a reserved name"),
    (["meshkit"], "is a reserved name"),
    (["meshauth"], "is a reserved name"),
    (["test"], "is a reserved name"),
    (["django"], "is a reserved name"),
    (["public"], "is a reserved name"),
    (["dependencies"], "is a reserved name"),
    (["class"], "is a reserved name"),
    (["match"], "is a reserved name"),
    (["json"], "standard library"),
    (["asyncio"], "standard library"),
    (["yaml"], "importable module"),
    (["gunicorn"], "importable module"),
    (["catalog"], "already exists in mesh.toml"),
    (["identity"], "already exists in mesh.toml"),
    (["payments", "--port", "8002"], "port 8002 is taken: 8002 belongs to catalog"),
    (["payments", "--port", "7002"], "port 7002 is taken: 8002 belongs to catalog"),
    (["payments", "--port", "9001"], "port 9001 is taken: 9001 belongs to identity"),
    (["payments", "--port", "80"], "port 80 is out of range"),
    (["payments", "--port", "65000"], "port 65000 is out of range"),
    (["payments", "--reads", "nosuch"], "--reads 'nosuch': no such service"),
    (["payments", "--reads", "catalog,nosuch"], "--reads 'nosuch': no such service"),
]


@pytest.mark.parametrize(("argv", "reason"), REFUSED, ids=[" ".join(a) or "empty" for a, _ in REFUSED])
def test_refused_with_one_line_and_exit_2_changing_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    before = state(repo)
    assert new_service(*argv) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith("[mesh] new-service: ")
    assert reason in out
    assert state(repo) == before
    assert git_status(repo) == ""


def test_an_existing_directory_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "charts" / "payments").mkdir()
    (repo / "charts" / "payments" / "notes.txt").write_text("someone else's work\n")
    before = state(repo)
    assert new_service("payments") == 2
    assert "charts/payments already exists" in capsys.readouterr().out
    assert state(repo) == before


def test_a_non_integer_port_is_a_usage_error(repo: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        new_service("payments", "--port", "eighty")
    assert raised.value.code == 2


# -- atomicity -----------------------------------------------------------------------------------------


class DiskFull:
    """Lets ``allowed`` renames through, then fails like a full disk would."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.calls = 0

    def __call__(self, source: Path, target: Path) -> None:
        self.calls += 1
        if self.calls > self.allowed:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        Path(source).replace(target)


def planned_file_count(root: Path) -> int:
    return len(plan(root, load_registry(root), prepare(root, "payments", reads=["catalog"])))


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_failure_half_way_leaves_the_tree_as_it_was(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    total = planned_file_count(repo)
    allowed = {"first": 0, "middle": total // 2, "last": total - 1}[where]
    before = state(repo)
    failing = DiskFull(allowed)
    monkeypatch.setattr(transaction, "_replace", failing)
    assert new_service("payments", "--reads", "catalog") == 1
    assert failing.calls == allowed + 1, "the failure must happen where the test put it"
    out = capsys.readouterr().out
    assert "No space left on device" in out
    assert out.strip().endswith("nothing was changed")
    assert state(repo) == before
    assert git_status(repo) == ""


def test_an_interrupt_half_way_leaves_the_tree_as_it_was(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = state(repo)
    calls = []

    def interrupted(source: Path, target: Path) -> None:
        calls.append(target)
        if len(calls) == 20:
            raise KeyboardInterrupt
        Path(source).replace(target)

    monkeypatch.setattr(transaction, "_replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        new_service("payments")
    assert len(calls) == 20
    assert state(repo) == before
    assert git_status(repo) == ""


def test_a_file_edited_by_someone_else_meanwhile_wins(repo: Path) -> None:
    changes = plan(repo, load_registry(repo), prepare(repo, "payments"))
    edited = (repo / "mesh.toml").read_text() + "# another engineer's edit\n"
    (repo / "mesh.toml").write_text(edited)
    before = state(repo)
    with pytest.raises(ConcurrentEdit, match="mesh.toml changed"):
        write_all_or_nothing(repo, changes)
    assert state(repo) == before


def test_success_wires_the_registry_workspace_chart_and_skaffold(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert new_service("payments", "--port", "8010", "--reads", "catalog") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("[mesh] created payments (port 8010")
    service = load_registry(repo)["payments"]
    assert (service.port, service.schema, service.reads, service.calls) == (
        8010,
        "payments",
        ("catalog",),
        (),
    )
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    assert "payments" in pyproject["dependency-groups"]["dev"]
    assert pyproject["tool"]["uv"]["sources"]["payments"] == {"workspace": True}
    assert 'name = "payments"' in (repo / "uv.lock").read_text()
    values = yaml.safe_load((repo / "charts/payments/values.yaml").read_text())
    assert values["mesh"] == {"calls": [], "reads": ["catalog"]}
    module = next(
        d
        for d in yaml.safe_load_all((repo / "skaffold.yaml").read_text())
        if d["metadata"]["name"] == "payments"
    )
    assert module["portForward"][0]["localPort"] == 8010
    assert "payments_reader" in (repo / "k8s/db-bootstrap/bootstrap.yaml").read_text()
    assert (repo / "services/payments/manage.py").stat().st_mode & 0o111
    settings = (repo / "services/payments/src/payments/settings.py").read_text()
    assert 'url_variable="CATALOG_READ_DATABASE_URL"' in settings
    # What it wrote besides the service's code is `make generate`'s output for the new mesh.toml.
    assert stale_files(repo) == []
    # A second run is refused: the service exists now.
    assert new_service("payments") == 2


def test_without_reads_there_is_no_read_alias_and_no_reads_test(repo: Path) -> None:
    assert new_service("payments") == 0
    assert load_registry(repo)["payments"].port == max(s.port for s in load_registry(REPO)) + 1
    assert not (repo / "services/payments/tests/test_reads.py").exists()
    assert "READ_DATABASE_URL" not in (repo / "services/payments/src/payments/settings.py").read_text()
    assert yaml.safe_load((repo / "charts/payments/values.yaml").read_text())["mesh"]["reads"] == []


# -- a fresh machine: uv's cache empty, the package index reachable or not -------------------------------


def locked_versions(root: Path) -> dict[str, str]:
    lock = tomllib.loads((root / "uv.lock").read_text())
    return {package["name"]: package.get("version", "") for package in lock["package"]}


def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty-uv-cache"
    cache.mkdir()
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    return cache


def cut_off_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request uv makes goes to a proxy that refuses connections, as with no network."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


def test_a_fresh_machine_locks_the_new_service_from_the_package_index(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make sync` caches wheels, not the index pages `uv lock --offline` needs: this is a new machine.
    cache = empty_cache(tmp_path, monkeypatch)
    before = locked_versions(repo)
    assert new_service("payments") == 0
    after = locked_versions(repo)
    assert after.pop("payments") == "0.1.0"
    assert after == before, "adding a service must not move any locked version"
    assert any(cache.iterdir()), "the lock must have come from the index into this (empty) cache"


def test_without_the_package_index_it_says_what_to_do_and_changes_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty_cache(tmp_path, monkeypatch)
    cut_off_the_network(monkeypatch)
    before = state(repo)
    assert new_service("payments") == 1
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith("[mesh] new-service: uv lock failed (")
    assert "make sure PyPI is reachable" in out
    assert out.strip().endswith("nothing was changed")
    assert state(repo) == before
    assert git_status(repo) == ""


def test_once_the_index_was_reached_it_locks_with_no_network(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_cache(tmp_path, monkeypatch)
    assert new_service("payments") == 0
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=repo, check=True)
    subprocess.run(["git", "clean", "-qfd"], cwd=repo, check=True)
    cut_off_the_network(monkeypatch)
    assert new_service("invoices") == 0  # the offline attempt, from what the first lock cached
    assert "invoices" in locked_versions(repo)


def test_a_lock_that_would_move_another_services_versions_is_refused(repo: Path) -> None:
    # A new member that cannot live with a locked version: uv would move it for every service.
    lockfile = (repo / "uv.lock").read_text()
    pyyaml = locked_versions(repo)["pyyaml"]
    member = Path("services/payments/pyproject.toml")
    pyproject = f"""[project]
name = "payments"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["pyyaml!={pyyaml}"]
"""
    with pytest.raises(
        PlanError, match=rf"uv lock would move versions the fleet runs: .*\bpyyaml {re.escape(pyyaml)}\b"
    ):
        lock(repo, lockfile, {member: pyproject})


# -- templates ---------------------------------------------------------------------------------------


def test_unknown_placeholders_are_a_template_bug() -> None:
    with pytest.raises(KeyError, match="nme"):
        render("name: {{ nme }}", {"name": "x"})
    # Helm's and GitHub's expressions are not ours and pass through untouched.
    text = '{{ include "x" . }} ${{ github.workflow }} {{.IMAGE_TAG}}'
    assert render(text, {}) == text


# -- the generated code is lint-clean for any name ------------------------------------------------------

NAMES = [
    ServiceSpec("ab", 8100),
    ServiceSpec("a" * 31, 8101, ("catalog",)),
    ServiceSpec("zz" * 15 + "z", 8102, ("orders", "catalog")),
    ServiceSpec("meshy2", 8103, ("c" * 31, "d" * 14, "e" * 13)),
]


@pytest.fixture(scope="module")
def linted(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository copy with each spec's service rendered into services/ (ruff's src config)."""
    root = tmp_path_factory.mktemp("lint") / "repo"
    shutil.copytree(pristine, root)
    for spec in NAMES:
        for relative, content, _ in render_tree("service", spec.context()):
            path = root / "services" / spec.name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return root


@pytest.mark.parametrize("spec", NAMES, ids=lambda s: f"{s.name[:8]}-{len(s.name)}-reads{len(s.reads)}")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_generated_code_is_ruff_clean(linted: Path, spec: ServiceSpec, command: list[str]) -> None:
    target = linted / "services" / spec.name
    result = subprocess.run(
        [str(RUFF), *command, "--no-cache", str(target)],
        cwd=linted,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    settings = (target / "src" / spec.name / "settings.py").read_text()
    for owner in spec.reads:
        assert f'"{owner.upper()}_READ_DATABASE_URL"' in settings


def test_paths_are_named_after_the_service() -> None:
    spec = ServiceSpec("payments", 8004, ("catalog",))
    paths = {path for path, _, _ in render_tree("service", spec.context())}
    assert {Path("src/payments/settings.py"), Path("tests/test_reads.py"), Path("manage.py")} <= paths
    assert not any("__name__" in str(p) or str(p).endswith("-tpl") for p in paths)
