from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshauth.sidecar.haproxy import find_haproxy
from meshauth_testkit import AUDIENCE, ISSUER, PRINCIPAL_SECRET, FakeIdentity, Upstream, free_port, wait_until


@pytest.fixture
def identity() -> Iterator[FakeIdentity]:
    server = FakeIdentity()
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.stop()


def require_haproxy() -> None:
    """The HAProxy engine's tests need HAProxy: skipped on a laptop without it, failed under ``CI=true``
    (`.ci/run` installs Debian's), as the mesh's tests treat their tools (mesh.testing.tool_missing)."""
    if find_haproxy():
        return
    message = "HAProxy is not installed (Debian package haproxy)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI=true: the CI run must install it")
    pytest.skip(message)


class SidecarProcess:
    """``python -m meshauth.sidecar`` as a real process on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path, sock: socket.socket | None = None) -> None:
        # With ``sock``, the sidecar serves a listening socket it inherits (``fd://N``), as under
        # `mesh up`, whose supervisor keeps it open across restarts.
        self.port = sock.getsockname()[1] if sock else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.log = log
        self.engine = env.get("MESHAUTH_SIDECAR_ENGINE", "python")
        listen = f"fd://{sock.fileno()}" if sock else f"127.0.0.1:{self.port}"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MESHAUTH_")},
            "MESHAUTH_SIDECAR_LISTEN": listen,
            "MESHAUTH_SIDECAR_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            **env,
        }
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshauth.sidecar"],
            env=full_env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),) if sock else (),
        )
        try:
            wait_until(self._up, timeout=20)
        except BaseException:
            self.stop()  # never ready: not left running after the test
            raise

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"sidecar exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.metrics_url}/metrics/sidecar", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log_file.close()


@pytest.fixture
def start_sidecar(tmp_path: Path, identity: FakeIdentity, upstream: Upstream) -> Iterator[object]:
    started: list[SidecarProcess] = []

    def start(sock: socket.socket | None = None, **env: str) -> SidecarProcess:
        if env.get("MESHAUTH_SIDECAR_ENGINE") == "haproxy":
            require_haproxy()
        base = {
            "MESHAUTH_SIDECAR_UPSTREAM": upstream.url,
            "MESHAUTH_ISSUER": ISSUER,
            "MESHAUTH_AUDIENCE": AUDIENCE,
            "MESHAUTH_JWKS_URL": identity.jwks_url,
            "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
            "MESHAUTH_SIDECAR_SHUTDOWN_TIMEOUT": "10",
        }
        sidecar = SidecarProcess({**base, **env}, tmp_path / f"sidecar-{len(started)}.log", sock)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()


@pytest.fixture
def sidecar(start_sidecar: object) -> SidecarProcess:
    return start_sidecar()  # type: ignore[operator,no-any-return]
