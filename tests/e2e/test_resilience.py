"""The mesh keeps working when identity is down, and identity's keys rotate with nothing restarted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from conftest import PASSWORD, bearer, signup_and_login, start_fleet, stop_fleet
from mesh.fleet import Fleet
from mesh.processes import wait_for_http
from mesh.registry import Registry

ACTIVATION_DELAY = 2


@pytest.fixture(scope="module", params=["sidecar", "inprocess"])
def fleet(
    request: pytest.FixtureRequest, mesh_registry: Registry, admin_url: str, tmp_path_factory
) -> Iterator[Fleet]:
    # Verifiers may refetch the JWKS every second here; rotation publishes a key 2 s before it signs.
    fleet = start_fleet(
        mesh_registry,
        admin_url,
        tmp_path_factory.mktemp(f"resilience-{request.param}"),
        mode=request.param,
        extra_env={"MESHAUTH_JWKS_MIN_REFRESH_INTERVAL": "1"},
    )
    try:
        yield fleet
    finally:
        stop_fleet(fleet)


def orders_status(fleet: Fleet, token: str) -> int:
    return httpx.get(f"{fleet.url('orders')}/api/v1/orders", headers=bearer(token)).status_code


def test_key_rotation_needs_no_restart(fleet: Fleet) -> None:
    user = signup_and_login(fleet)
    old_token = user["access_token"]
    assert orders_status(fleet, old_token) == 200
    pids = {name: [p.pid for p in procs] for name, procs in fleet.processes.items()}

    rotated = fleet.manage(
        fleet.registry["identity"], "rotate_signing_key", "--activate-after", str(ACTIVATION_DELAY)
    )
    assert "new signing key" in rotated.stdout
    time.sleep(ACTIVATION_DELAY + 0.5)

    login = httpx.post(
        f"{fleet.url('identity')}/api/v1/auth/token", json={"email": user["email"], "password": PASSWORD}
    )
    new_token = login.json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    # The first request with the new kid is accepted: the verifier refetched the published JWKS.
    assert orders_status(fleet, new_token) == 200
    assert orders_status(fleet, old_token) == 200  # still inside the overlap window
    assert {name: [p.pid for p in procs] for name, procs in fleet.processes.items()} == pids


def test_tokens_keep_working_while_identity_is_down(fleet: Fleet) -> None:
    user = signup_and_login(fleet)
    token = user["access_token"]
    assert orders_status(fleet, token) == 200

    identity = fleet.registry["identity"]
    # identity's pod is gone (in-process mode) or its app container is (sidecar mode).
    fleet.stop(["identity"])
    if fleet.mode == "sidecar":
        fleet.listen()
        fleet.processes["identity"] = [fleet.sidecar_process(identity)]
        fleet.processes["identity"][0].start()
        fleet.sockets["identity"].pop("app").close()  # nothing listens where the app was
        wait_for_http(fleet.metrics_url("identity", "sidecar"))
    try:
        # Local verification against cached keys: no call to identity on the request path.
        for _ in range(5):
            assert orders_status(fleet, token) == 200
        products = httpx.get(f"{fleet.url('catalog')}/api/v1/products")
        assert products.status_code == 200

        credentials = {"email": user["email"], "password": PASSWORD}
        if fleet.mode == "sidecar":
            # The pod's sidecar still answers: a clear, retryable 503 instead of a hang or a 500.
            login = httpx.post(f"{fleet.url('identity')}/api/v1/auth/token", json=credentials)
            assert login.status_code == 503
            assert login.headers["Retry-After"] == "5"
            assert login.json()["reason"] == "upstream_unavailable"
        else:
            # Nothing listens any more (in a cluster, the Service has no endpoint left).
            with pytest.raises(httpx.ConnectError):
                httpx.post(f"{fleet.url('identity')}/api/v1/auth/token", json=credentials)
    finally:
        fleet.stop(["identity"])
        fleet.start(identity)
        fleet.wait_ready(identity)
