"""`mesh up` as a kubelet: a dead process comes back, a crash loop ends the run with exit 1, a second
mesh is refused, and however `mesh up` ends (Ctrl-C, SIGTERM, a closed terminal, SIGKILL, a broken
stdout pipe) nothing it started is left running, PostgreSQL included.

Each run has a state directory of its own (``MESH_STATE_DIR``), so `mesh up` starts, and must stop,
an embedded PostgreSQL of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from mesh.registry import load_registry
from mesh.testing import free_port_offset, read_until

# identity alone, one worker: the cheapest mesh that has every kind of process.
REPO = Path(__file__).resolve().parents[2]
UP = [sys.executable, "-m", "mesh", "up", "--only", "identity", "--workers", "1"]


@dataclass
class MeshUp:
    proc: subprocess.Popen[str]
    offset: int
    state: Path
    lines: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{8001 + self.offset}"

    @property
    def run_dir(self) -> Path:
        return self.state / f"run-{self.offset}"

    def read_until(self, marker: str, timeout: float = 180) -> str:
        """The first line holding ``marker`` (every line read is kept in ``lines``)."""
        return read_until(self.proc, marker, timeout, self.lines)[-1]

    def started(self) -> list[int]:
        """Every process this run started: its descendants, and the PostgreSQL it daemonized."""
        pids = [child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)]
        postmaster = self.state / "postgres" / "data" / "postmaster.pid"
        pids.append(int(postmaster.read_text().splitlines()[0]))
        return pids

    def app_master(self) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children():
            if "gunicorn" in " ".join(child.cmdline()):
                return child
        raise AssertionError("no gunicorn master under mesh up")


def _offset() -> int:
    return free_port_offset(load_registry(REPO))


def start_mesh(state: Path, offset: int | None = None, **env_vars: str) -> MeshUp:
    offset = offset or _offset()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_ADMIN_URL"}
    proc = subprocess.Popen(
        [*UP, "--port-offset", str(offset)],
        cwd=REPO,
        env={**env, **env_vars, "MESH_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return MeshUp(proc, offset, state, [])


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    # One data directory for the module: initdb once, then every run starts and stops the server.
    # Not under pytest's tmp_path: every pytest session on the host resets that tree to mode 0700,
    # which would lock PostgreSQL's own user out of its data directory.
    path = Path(tempfile.mkdtemp(prefix="mesh-state-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mesh(state: Path, request: pytest.FixtureRequest) -> Iterator[MeshUp]:
    # A test may set the mesh's environment: @pytest.mark.parametrize("mesh", [{...}], indirect=True).
    run = start_mesh(state, **getattr(request, "param", {}))
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            run.proc.wait(90)


def assert_all_gone(pids: list[int], timeout: float = 40) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"


@pytest.mark.parametrize("ending", ["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL", "broken stdout"])
def test_nothing_outlives_mesh_up(mesh: MeshUp, ending: str) -> None:
    mesh.read_until("press Ctrl-C to stop")
    pids = mesh.started()
    assert len(pids) >= 5, pids  # gunicorn master and worker, the sidecar, the watchdog, PostgreSQL
    if ending == "broken stdout":
        # `make up | cat`, then Ctrl-C: cat dies first and the next line hits a closed pipe.
        assert mesh.proc.stdout is not None
        mesh.proc.stdout.close()
        mesh.proc.send_signal(signal.SIGINT)
        rest = ""
    else:
        mesh.proc.send_signal(getattr(signal, ending))
        rest = mesh.proc.communicate(timeout=90)[0]
    code = mesh.proc.wait(90)
    assert code == (-signal.SIGKILL if ending == "SIGKILL" else 0), rest
    assert_all_gone(pids)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{mesh.url}/livez", timeout=2)


def test_a_dead_process_is_restarted_and_a_second_mesh_refused(mesh: MeshUp, state: Path) -> None:
    mesh.read_until("press Ctrl-C to stop")
    master = mesh.app_master()
    master.kill()
    line = mesh.read_until("restarting in")
    assert "identity-app killed by SIGKILL" in line
    mesh.read_until("identity-app: restarted")
    mesh.read_until("identity: serving again after")
    assert httpx.get(f"{mesh.url}/readyz", timeout=10).status_code == 200
    assert mesh.app_master().pid != master.pid

    # The same run directory (same offset) is locked; another offset whose ports overlap is refused.
    again = subprocess.run(
        [*UP, "--port-offset", str(mesh.offset)],
        env={**os.environ, "MESH_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert again.stdout.count("\n") == 1
    assert "a mesh is already running" in again.stdout
    assert str(mesh.proc.pid) in again.stdout


def test_a_port_in_use_is_refused_with_one_line(state: Path) -> None:
    offset = _offset()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 8001 + offset))
        taken.listen()
        result = subprocess.run(
            [*UP, "--port-offset", str(offset)],
            env={**os.environ, "MESH_STATE_DIR": str(state)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stdout == (
        f"[mesh] port {8001 + offset} (identity) is already in use: another mesh or program listens "
        "there; stop it, or use --port-offset N\n"
    )


def test_a_crash_loop_ends_the_run_with_exit_1(mesh: MeshUp) -> None:
    mesh.read_until("press Ctrl-C to stop")
    pids = mesh.started()
    # Every new gunicorn master now fails at start: its metrics directory cannot be created.
    metrics = mesh.run_dir / "identity" / "metrics"
    subprocess.run(["rm", "-rf", str(metrics)], check=True)
    metrics.write_text("not a directory")
    mesh.app_master().kill()
    gave_up = mesh.read_until("giving up", timeout=120)
    assert "identity-app failed 6 times in a row" in gave_up
    rest = mesh.proc.communicate(timeout=90)[0]
    assert mesh.proc.returncode == 1
    assert "[mesh] stopped" in rest
    output = "".join(mesh.lines)
    # Back-off doubles: 0.5, 1, 2, 4, 8 seconds.
    for delay in ("0.5", "1.0", "2.0", "4.0", "8.0"):
        assert f"restarting in {delay} s" in output
    assert_all_gone(pids)


# gunicorn's worker timeout, short so the test freezes identity for longer than it in a few seconds.
TIMEOUT = 3


@pytest.mark.parametrize("mesh", [{"GUNICORN_TIMEOUT": str(TIMEOUT)}], indirect=True)
def test_a_frozen_app_resumes_with_the_same_workers_and_no_failed_request(mesh: MeshUp) -> None:
    mesh.read_until("press Ctrl-C to stop")
    credentials = {"email": "frozen@example.com", "password": "correct horse battery staple"}
    with httpx.Client(base_url=mesh.url, timeout=30) as http:
        assert http.post("/api/v1/auth/signup", json=credentials).status_code == 201
        assert http.post("/api/v1/auth/token", json=credentials).status_code == 200
        master = mesh.app_master()
        workers = sorted(child.pid for child in master.children())
        log = mesh.run_dir / "identity" / "app.log"
        logged = log.stat().st_size

        # The whole gunicorn (master and workers: its process group) stops for over three worker
        # timeouts, as a paused container does, then resumes.
        os.killpg(master.pid, signal.SIGSTOP)
        time.sleep(3 * TIMEOUT + 1)
        os.killpg(master.pid, signal.SIGCONT)

        # For two timeouts after the resume every login succeeds, served by the same workers.
        statuses = []
        deadline = time.monotonic() + 2 * TIMEOUT + 1
        while time.monotonic() < deadline:
            statuses.append(http.post("/api/v1/auth/token", json=credentials).status_code)
        assert set(statuses) == {200}, statuses
        assert sorted(child.pid for child in master.children()) == workers
        with log.open() as handle:
            handle.seek(logged)
            since = handle.read()
        assert "WORKER TIMEOUT" not in since
        assert "did not run for" in since  # the master noticed its own pause
