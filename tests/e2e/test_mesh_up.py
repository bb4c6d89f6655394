"""`make up`'s engine (`mesh up`) as a user runs it: progress, a ready mesh, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import psutil
import pytest

from mesh.bootstrap import drop_database
from mesh.testing import free_port_offset, read_until, tool_missing
from meshauth.sidecar.haproxy import find_haproxy


@pytest.fixture
def mesh_up(admin_url: str, mesh_registry):
    offset = free_port_offset(mesh_registry)
    database = f"test_up_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "up", "--port-offset", str(offset), "--database", database],
        cwd=mesh_registry.root,
        env={**os.environ, "DATABASE_ADMIN_URL": admin_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, offset
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        drop_database(admin_url, database)


def test_mesh_up_serves_every_service_and_stops_cleanly(mesh_up, mesh_registry) -> None:
    proc, offset = mesh_up
    started = time.monotonic()
    lines = read_until(proc, "press Ctrl-C to stop", timeout=120)
    print(f"mesh up: every service ready after {time.monotonic() - started:.1f} s")
    output = "".join(lines)
    for service in mesh_registry:
        assert f"{service.name}: migrate_locked" in output
        assert f"{service.name}: ready on http://127.0.0.1:{service.port + offset}" in output
        response = httpx.get(f"http://127.0.0.1:{service.port + offset}/readyz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"

    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "mesh up should have started gunicorn processes"
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "[mesh] stopped" in rest
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left behind: {alive}"
    for service in mesh_registry:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{service.port + offset}/livez", timeout=2)


def test_mesh_up_with_haproxy_serving_the_sidecars(admin_url: str, mesh_registry) -> None:
    """`make up ARGS="--sidecar-engine haproxy"`: HAProxy serves each sidecar's port; a user's token is
    verified there, the sidecar's metrics count it, and a stop leaves no HAProxy behind."""
    if find_haproxy() is None:
        tool_missing("HAProxy is missing (apt-get install haproxy)")
    offset = free_port_offset(mesh_registry)
    database = f"test_up_{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "mesh", "up", "--sidecar-engine", "haproxy", "--only", "identity", "orders"]
    proc = subprocess.Popen(
        [*argv, "--port-offset", str(offset), "--database", database],
        cwd=mesh_registry.root,
        env={**os.environ, "DATABASE_ADMIN_URL": admin_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(proc, "press Ctrl-C to stop", timeout=120)
        identity, orders = (
            f"http://127.0.0.1:{mesh_registry[n].port + offset}" for n in ("identity", "orders")
        )
        email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
        login = {"email": email, "password": "correct horse battery staple"}
        assert httpx.post(f"{identity}/api/v1/auth/signup", json=login).status_code == 201
        token = httpx.post(f"{identity}/api/v1/auth/token", json=login).json()["access_token"]
        mine = httpx.get(f"{orders}/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert mine.status_code == 200, mine.text
        refused = httpx.get(f"{orders}/api/v1/orders", headers={"Authorization": "Bearer x.y.z"})
        assert (refused.status_code, refused.json()["reason"]) == (401, "malformed")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert [p for p in children if p.name() == "haproxy"], "HAProxy serves the sidecars' ports"
        metrics = f"http://127.0.0.1:{mesh_registry['orders'].sidecar_metrics_port + offset}/metrics/sidecar"
        counted = 'meshauth_sidecar_auth_decisions_total{reason="malformed",result="rejected"} 1.0'
        deadline = time.monotonic() + 10  # counted from HAProxy's access lines, 0.2 s late at most
        while counted not in httpx.get(metrics).text and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counted in httpx.get(metrics).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left behind: {[p.name() for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        drop_database(admin_url, database)


def test_unknown_service_is_refused_with_one_line(mesh_registry) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "up", "--only", "nosuch"],
        cwd=mesh_registry.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout.strip() == "[mesh] unknown service(s): nosuch"
