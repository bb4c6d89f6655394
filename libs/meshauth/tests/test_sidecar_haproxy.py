"""The sidecar with HAProxy serving its port (``MESHAUTH_SIDECAR_ENGINE=haproxy``): what only this
engine has to get right. What both engines must do alike is in test_sidecar.py, run against each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshauth.headers import verify_principal_headers
from meshauth_testkit import (
    AUDIENCE,
    ISSUER,
    PRINCIPAL_SECRET,
    FakeIdentity,
    Upstream,
    free_port,
    raw_request,
    wait_until,
)
from test_sidecar_request_target import FOREIGN_TARGETS


def _received(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


def test_a_new_key_at_identity_is_used_after_a_reload_that_drops_no_request(
    start_sidecar: Any, identity: FakeIdentity
) -> None:
    sidecar = start_sidecar(
        MESHAUTH_SIDECAR_ENGINE="haproxy", MESHAUTH_JWKS_TTL="1", MESHAUTH_JWKS_MIN_REFRESH_INTERVAL="1"
    )
    url = f"{sidecar.url}/api/v1/orders"
    statuses: list[int | str] = []
    stop = threading.Event()

    def keep_asking() -> None:
        # One keep-alive client asking all along: the reload must not cost it a request.
        with httpx.Client(headers={"Authorization": f"Bearer {identity.token(sub='1')}"}) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.get(url).status_code)
                except httpx.HTTPError as exc:  # recorded: the assertion below names it
                    statuses.append(repr(exc))

    client = threading.Thread(target=keep_asking)
    client.start()
    try:
        new_kid = identity.add_key("RS256")
        token = identity.token(kid=new_kid, sub="9")
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()["reason"] == "unknown_kid"
        wait_until(lambda: httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200)
    finally:
        stop.set()
        client.join(10)
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert verify_principal_headers(_received(response), PRINCIPAL_SECRET).subject == "9"  # type: ignore[union-attr]
    assert len(statuses) > 10
    assert set(statuses) == {200}
    assert "reloading HAProxy" in sidecar.log.read_text()


def test_a_key_haproxy_cannot_verify_is_left_out_and_its_tokens_refused(
    start_sidecar: Any, identity: FakeIdentity
) -> None:
    # HAProxy 2.6 verifies no EdDSA signature: such a key's tokens are refused, never let through.
    eddsa = identity.add_key("EdDSA")
    sidecar = start_sidecar(MESHAUTH_SIDECAR_ENGINE="haproxy")
    response = httpx.get(
        f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {identity.token(kid=eddsa)}"}
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_kid"
    rs256 = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {identity.token()}"})
    assert rs256.status_code == 200


def test_every_request_has_the_sidecars_access_line(start_sidecar: Any, identity: FakeIdentity) -> None:
    sidecar = start_sidecar(MESHAUTH_SIDECAR_ENGINE="haproxy")
    httpx.get(
        f'{sidecar.url}/api/v1/orders?q="x"',
        headers={"X-Request-ID": "line-test-1", "User-Agent": 'probe "quoted" /1'},
    )
    httpx.get(f"{sidecar.url}/livez")
    refused = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"Authorization": "Bearer not.a.token"})

    def lines() -> list[dict[str, Any]]:
        found = []
        for line in sidecar.log.read_text().splitlines():
            if line.startswith("{") and '"meshauth.sidecar.access"' in line:
                found.append(json.loads(line))
        return found

    wait_until(lambda: len(lines()) >= 2, timeout=5)
    first, second = lines()[-2:]
    assert first["request_id"] == "line-test-1"
    assert (first["method"], first["path"], first["status"]) == ("GET", "/api/v1/orders", 200)
    assert first["user_agent"] == 'probe "quoted" /1'
    assert first["remote_addr"] == "127.0.0.1"
    assert first["message"] == "GET /api/v1/orders 200"
    assert first["level"] == "INFO"
    assert isinstance(first["duration_ms"], int)
    assert time.strptime(first["time"], "%Y-%m-%dT%H:%M:%SZ")
    assert (first["auth"], first["reason"], first["termination"]) == ("anonymous", "-", "----")
    assert (second["status"], second["auth"], second["reason"]) == (401, "rejected", "malformed")
    assert len(second["request_id"]) == 32
    # The reason is logged, not sent as a header; probes are not logged.
    assert all(not name.lower().startswith("x-meshauth") for name in refused.headers)
    assert not [line for line in lines() if line["path"] in ("/livez", "/readyz")]


def test_haproxy_ends_with_the_sidecar_process_even_when_it_is_killed(start_sidecar: Any) -> None:
    sidecar = start_sidecar(MESHAUTH_SIDECAR_ENGINE="haproxy")
    children = [
        int(pid)
        for pid in (Path("/proc") / str(sidecar.process.pid) / "task" / str(sidecar.process.pid) / "children")
        .read_text()
        .split()
    ]
    assert children, "HAProxy runs as the sidecar's child"
    sidecar.process.send_signal(signal.SIGKILL)
    sidecar.process.wait(10)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in children)

    wait_until(gone, timeout=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sidecar.url}/livez", timeout=2)


def test_a_target_naming_another_host_reaches_nobody(
    start_sidecar: Any, identity: FakeIdentity, upstream: Upstream
) -> None:
    # The request-target tests (test_sidecar_request_target.py) hold the Python server to its JSON
    # answers; HAProxy refuses some of these forms itself, with its own page: what must hold for it
    # too is that nothing reaches another host, and nothing reaches the app.
    other = Upstream()
    try:
        sidecar = start_sidecar(MESHAUTH_SIDECAR_ENGINE="haproxy")
        token = [f"Authorization: Bearer {identity.token()}"]
        for form in [*FOREIGN_TARGETS, "127.0.0.1:{port}"]:
            target = form.format(port=other.port)
            method = "CONNECT" if not target.startswith(("/", "h", "H")) else "GET"
            response = raw_request(sidecar.port, f"{method} {target} HTTP/1.1", token)
            assert 400 <= response.status < 500, (target, response.status_line)
        assert (other.hits, upstream.hits) == (0, 0)
    finally:
        other.stop()


def test_an_unknown_engine_stops_the_sidecar_at_start_with_one_line(identity: FakeIdentity) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESHAUTH_")},
        "MESHAUTH_ISSUER": ISSUER,
        "MESHAUTH_AUDIENCE": AUDIENCE,
        "MESHAUTH_JWKS_URL": identity.jwks_url,
        "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
        "MESHAUTH_SIDECAR_LISTEN": f"127.0.0.1:{free_port()}",
        "MESHAUTH_SIDECAR_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "MESHAUTH_SIDECAR_ENGINE": "envoy",
    }
    run = subprocess.run(
        [sys.executable, "-m", "meshauth.sidecar"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    output = run.stdout + run.stderr
    assert "MESHAUTH_SIDECAR_ENGINE='envoy' must be one of: python, haproxy" in output
    assert "Traceback" not in output
