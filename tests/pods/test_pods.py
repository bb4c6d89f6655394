"""The deployables run for real: `mesh pods` plays the charts' pods from the images under podman.

Each mode (sidecar, in-process, and sidecar with the HAProxy engine: auth.sidecar.engine=haproxy) is
one `mesh pods` run on its own ports and its own PostgreSQL: the
images are built (cached after the first build), the k8s/ bootstrap Job, the migration hooks and the
Deployments run as pods, then the README's journey goes through them. SIGTERM must leave nothing
behind. podman is real; nothing here is mocked.
"""

from __future__ import annotations

import json
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

import httpx
import pytest

from mesh.containers.podman import missing_tools
from mesh.registry import find_root, load_registry
from mesh.testing import free_port_offset, tool_missing

REPO = find_root(Path(__file__).parent)
CONF = REPO / "containers" / "containers.conf"
PASSWORD = "correct horse battery staple"
START_TIMEOUT = 900  # a cold first run builds every image (debootstrap included)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONF)},
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@dataclass
class PodsRun:
    process: subprocess.Popen[str]
    output: Path
    state: Path
    offset: int
    mode: str
    engine: str
    urls: dict[str, str]
    metrics: dict[str, str]
    sidecar_metrics: dict[str, str]

    def text(self) -> str:
        return self.output.read_text()

    def pods(self) -> list[str]:
        return re.findall(r"^    (\S+-pod-0)\s", self.text(), re.MULTILINE)


def _start(mode: str, engine: str, tmp: Path) -> PodsRun:
    registry = load_registry(REPO)
    offset = free_port_offset(registry)
    output = tmp / "mesh-pods.log"
    # Not under pytest's tmp: other pytest sessions reset its root to 0700, which the server's own
    # unprivileged user then cannot traverse.
    state = REPO / ".mesh" / f"pods-test-{offset}"
    argv = [sys.executable, "-m", "mesh", "pods", "--no-build", "--mode", mode, "--sidecar-engine", engine]
    argv += ["--port-offset", str(offset)]
    process = subprocess.Popen(
        [*argv, "--state-dir", str(state), "--database", "test_pods"],
        cwd=REPO,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    urls = {s.name: f"http://127.0.0.1:{s.port + offset}" for s in registry}
    # the internal listeners where `make up` puts them (mesh.toml port + 2000 / + 3000, plus the offset)
    metrics = {s.name: f"http://127.0.0.1:{s.metrics_port + offset}/metrics" for s in registry}
    sidecar = {
        s.name: f"http://127.0.0.1:{s.sidecar_metrics_port + offset}/metrics/sidecar" for s in registry
    }
    return PodsRun(process, output, state, offset, mode, engine, urls, metrics, sidecar)


def _wait_up(run: PodsRun) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "press Ctrl-C" not in run.text():
        if run.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mesh pods --mode {run.mode} did not come up:\n{run.text()[-6000:]}")
        time.sleep(1)


def _stop(run: PodsRun) -> None:
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
        try:
            run.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
    shutil.rmtree(run.state, ignore_errors=True)


def _leftovers(run: PodsRun) -> dict[str, list[str]]:
    """Pods, containers, volumes and secrets carrying this run's suffix."""
    suffix = f"-{run.offset}"
    found = {
        "pods": podman("pod", "ps", "--format", "{{.Name}}").stdout.split(),
        "containers": podman("ps", "-a", "--format", "{{.Names}}").stdout.split(),
        "volumes": podman("volume", "ls", "--format", "{{.Name}}").stdout.split(),
        "secrets": podman("secret", "ls", "--format", "{{.Name}}").stdout.split(),
    }
    return {kind: [n for n in names if suffix in n] for kind, names in found.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PodsRun]]:
    """The auth modes and sidecar engines side by side, each its own `mesh pods` on its own ports and
    PostgreSQL."""
    missing = missing_tools()
    if missing:
        tool_missing(f"missing Debian packages: {' '.join(missing)}")
    # The images once (cached layers after the first build), then both runs from them.
    built = subprocess.run(
        [sys.executable, "-m", "mesh", "images"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    started: dict[str, PodsRun] = {}
    try:
        for name, (mode, engine) in RUNS.items():
            started[name] = _start(mode, engine, tmp_path_factory.mktemp(f"pods-{name}"))
        for run in started.values():
            _wait_up(run)
        yield started
    finally:
        for run in started.values():
            _stop(run)
    for run in started.values():
        assert run.process.returncode == 0, run.text()[-3000:]
        # Nothing a run created outlives it.
        assert _leftovers(run) == {"pods": [], "containers": [], "volumes": [], "secrets": []}


# Each run: its auth mode and sidecar engine.
RUNS = {
    "sidecar": ("sidecar", "python"),
    "inprocess": ("inprocess", "python"),
    "haproxy": ("sidecar", "haproxy"),
}


@pytest.fixture(params=list(RUNS))
def pods(request: pytest.FixtureRequest, runs: dict[str, PodsRun]) -> PodsRun:
    return runs[request.param]


def signup_and_login(identity: str) -> str:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = httpx.post(f"{identity}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


def order_journey(run: PodsRun, token: str) -> None:
    """The README's journey: products, an order (idempotent), the order list with product names."""
    products = httpx.get(f"{run.urls['catalog']}/api/v1/products")
    assert products.status_code == 200
    assert "MUG-001" in products.text
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    body = {"items": [{"sku": "MUG-001", "qty": 2}]}
    placed = httpx.post(f"{run.urls['orders']}/api/v1/orders", json=body, headers=headers, timeout=30)
    assert placed.status_code == 201, placed.text
    again = httpx.post(f"{run.urls['orders']}/api/v1/orders", json=body, headers=headers, timeout=30)
    assert again.json()["id"] == placed.json()["id"]
    listed = httpx.get(f"{run.urls['orders']}/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert placed.json()["id"] in listed.text


def test_readme_journey_through_the_pods(pods: PodsRun) -> None:
    token = signup_and_login(pods.urls["identity"])
    order_journey(pods, token)
    anonymous = httpx.get(f"{pods.urls['orders']}/api/v1/orders")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/json")


def test_each_pod_serves_its_metrics_on_its_own_internal_ports(pods: PodsRun) -> None:
    """Three pods on one host network: each app's /metrics and admin and each sidecar's metrics listen
    on that service's own ports (the chart's 9090/9091 would collide), never on the public port."""
    httpx.get(f"{pods.urls['catalog']}/api/v1/products").raise_for_status()
    for name, public in pods.urls.items():
        for path in ("/metrics", "/metrics/sidecar"):
            assert httpx.get(f"{public}{path}").status_code == 404, (name, path)
        scraped = httpx.get(pods.metrics[name], timeout=10)
        assert scraped.status_code == 200, (name, scraped.text[:500])
        assert "http_server_request_duration_seconds" in scraped.text
        # the internal port is not a second way into the API
        other = httpx.get(pods.metrics[name].replace("/metrics", "/api/v1/products"), timeout=10)
        assert other.status_code == 404
        sidecar = pods.sidecar_metrics[name]
        if pods.mode == "sidecar":
            answer = httpx.get(sidecar, timeout=10)
            assert answer.status_code == 200, (name, answer.text[:500])
            assert "meshauth_sidecar_request_duration_seconds" in answer.text
            if name == "catalog":
                # The products request above, counted by the sidecar (HAProxy's from its access line,
                # 0.2 s late at most).
                answered = (
                    'meshauth_sidecar_request_duration_seconds_count{http_request_method="GET",'
                    'http_response_status_code="200"}'
                )
                deadline = time.monotonic() + 10
                while answered not in answer.text and time.monotonic() < deadline:
                    time.sleep(0.2)
                    answer = httpx.get(sidecar, timeout=10)
                assert answered in answer.text, answer.text[-2000:]
        else:
            with pytest.raises(httpx.ConnectError):
                httpx.get(sidecar, timeout=10)
    catalog = httpx.get(pods.metrics["catalog"], timeout=10).text
    counted = r'http_server_request_duration_seconds_count\{[^}]*http_route="[^"]*products'
    assert re.search(counted, catalog), catalog[-2000:]


def test_every_pod_is_the_charts_shape_on_loopback(pods: PodsRun) -> None:
    names = pods.pods()
    assert len(names) == 3, pods.text()[-2000:]
    expected = {"app", "meshauth"} if pods.mode == "sidecar" else {"app"}
    for pod in names:
        containers = podman("ps", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.IsInfra}}").stdout
        own = [line.split()[0] for line in containers.splitlines() if line.endswith("false")]
        assert {c.removeprefix(f"{pod}-") for c in own} == expected
        for container in own:
            info = json.loads(podman("inspect", container).stdout)[0]
            assert info["State"]["Status"] == "running"
            assert info["Config"]["User"] in {"10001", "10001:10001"}
            assert info["HostConfig"]["ReadonlyRootfs"] is True
            assert info["HostConfig"]["NetworkMode"] == "host", "never a bridge network"
            logs = podman("logs", container)
            text = logs.stdout + logs.stderr
            assert not re.search(r"error|traceback|exception", text, re.IGNORECASE), f"{container}:\n{text}"
            env = dict(e.split("=", 1) for e in info["Config"]["Env"])
            assert "MESHAUTH_PRINCIPAL_SECRET" not in env, "the principal secret never travels in the env"
        # The converted liveness probe, as podman runs it (a shell line in the container), passes.
        test = json.loads(podman("inspect", f"{pod}-app").stdout)[0]["Config"]["Healthcheck"]["Test"]
        assert test[0] == "CMD-SHELL"
        probe = podman("exec", f"{pod}-app", "sh", "-c", " ".join(test[1:]), check=False)
        assert probe.returncode == 0, probe.stdout + probe.stderr


# A request to gunicorn's unix socket, sent from inside a container with the image's Python.
ASK_SOCKET = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/gunicorn/app.sock'); "
    "s.sendall(b'GET /livez HTTP/1.0\\r\\n\\r\\n'); print(s.recv(64).decode().split()[1])"
)


def test_gunicorn_serves_the_sidecar_on_the_pods_own_socket(pods: PodsRun) -> None:
    """Sidecar mode: gunicorn listens on the unix socket of a memory volume only the app (read-write)
    and its sidecar (read-only) mount; identity's sidecar read its keys through it (a user token is
    verified there); in-process, there is neither volume nor socket."""
    for pod in pods.pods():
        mounts = {
            container: {
                m["Destination"]: m["RW"]
                for m in json.loads(podman("inspect", f"{pod}-{container}").stdout)[0]["Mounts"]
            }
            for container in (("app", "meshauth") if pods.mode == "sidecar" else ("app",))
        }
        if pods.mode == "inprocess":
            assert "/run/gunicorn" not in mounts["app"]
            continue
        assert (mounts["app"]["/run/gunicorn"], mounts["meshauth"]["/run/gunicorn"]) == (True, False)
        asked = podman("exec", f"{pod}-meshauth", "python", "-c", ASK_SOCKET, check=False)
        assert (asked.returncode, asked.stdout.strip()) == (0, "200"), asked.stdout + asked.stderr
    token = signup_and_login(pods.urls["identity"])
    me = httpx.get(f"{pods.urls['identity']}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text


def _access_lines(container: str, request_id: str) -> list[dict[str, object]]:
    logs = podman("logs", container)
    lines = (logs.stdout + logs.stderr).splitlines()
    entries = (json.loads(x) for x in lines if x.startswith("{"))
    return [
        e for e in entries if e.get("request_id") == request_id and str(e.get("logger")).endswith(".access")
    ]


def test_a_request_is_one_access_line_in_the_pod(pods: PodsRun) -> None:
    """Behind the sidecar its line is the pod's access log (client address and user agent included,
    as gunicorn's had) and gunicorn writes none; in-process, gunicorn's line is the one."""
    request_id = uuid.uuid4().hex
    agent = f"pods-test/{request_id[:6]}"
    answer = httpx.get(
        f"{pods.urls['catalog']}/api/v1/products", headers={"X-Request-ID": request_id, "User-Agent": agent}
    )
    assert answer.status_code == 200
    pod = next(p for p in pods.pods() if "catalog" in p)
    writer = f"{pod}-meshauth" if pods.mode == "sidecar" else f"{pod}-app"
    deadline = time.monotonic() + 10  # both write their lines in batches, 0.2 s late at most
    while not (found := _access_lines(writer, request_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, found
    assert (found[0]["path"], found[0]["status"], found[0]["user_agent"]) == ("/api/v1/products", 200, agent)
    assert found[0]["remote_addr"] == "127.0.0.1"
    if pods.mode == "sidecar":
        assert found[0]["logger"] == "meshauth.sidecar.access"
        assert _access_lines(f"{pod}-app", request_id) == [], "gunicorn repeats the sidecar's line"
        # HAProxy's line (auth.sidecar.engine=haproxy) has its termination state: HAProxy served it.
        assert ("termination" in found[0]) == (pods.engine == "haproxy")
    else:
        assert found[0]["logger"] == "gunicorn.access"


def test_principal_secret_is_born_in_the_pod(pods: PodsRun) -> None:
    if pods.mode == "inprocess":
        # No sidecar, so nothing to trust: no secret file and no volume for one.
        for pod in pods.pods():
            info = json.loads(podman("inspect", f"{pod}-app").stdout)[0]
            assert not [m for m in info["Mounts"] if m["Destination"] == "/run/meshauth"]
            assert "MESHAUTH_MODE=inprocess" in info["Config"]["Env"]
        return
    secrets_seen = set()
    for pod in pods.pods():
        for container in ("app", "meshauth"):
            read = podman("exec", f"{pod}-{container}", "cat", "/run/meshauth/principal-secret")
            assert len(read.stdout.strip()) >= 32
            secrets_seen.add((pod, read.stdout.strip()))
        # read-only for both containers: written once by the init container
        denied = podman(
            "exec", f"{pod}-app", "sh", "-c", "echo x > /run/meshauth/principal-secret", check=False
        )
        assert denied.returncode != 0
    assert len({secret for _, secret in secrets_seen}) == 3, (
        "one secret per pod, shared by its two containers"
    )


def test_a_killed_app_container_is_restarted_and_serves_again(pods: PodsRun) -> None:
    token = signup_and_login(pods.urls["identity"])
    pod = next(p for p in pods.pods() if "catalog" in p)
    container = f"{pod}-app"
    before = json.loads(podman("inspect", container).stdout)[0]
    # A crash, as the kernel's OOM killer would do it: SIGKILL to the container's main process.
    os.kill(before["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        after = json.loads(podman("inspect", container).stdout)[0]
        if after["RestartCount"] > before["RestartCount"] and after["State"]["Status"] == "running":
            try:
                if httpx.get(f"{pods.urls['catalog']}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        assert time.monotonic() < deadline, "the app container was not restarted within 120 s"
        time.sleep(0.5)
    order_journey(pods, token)
