"""Attacks on each service's front door (the sidecar, or gunicorn in-process), sent as raw bytes.

A client library would normalise these requests; an attacker does not, so neither do these tests.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import bearer, signup_and_login, start_fleet, stop_fleet
from mesh.fleet import Fleet
from mesh.registry import Registry


def raw_request(port: int, request_line: str, headers: list[str] | None = None) -> tuple[int, bytes, Any]:
    """Send ``request_line`` byte for byte; (status, body, parsed JSON body or None)."""
    lines = [request_line, "Host: 127.0.0.1", *(headers or []), "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return status, body, parsed


def test_no_front_door_is_a_proxy_to_another_service(mesh: Fleet) -> None:
    token = signup_and_login(mesh)["access_token"]
    # What the other services answer when asked directly: none of it may come back through a front door.
    genuine = {
        "identity": "/.well-known/jwks.json",
        "catalog": "/api/v1/products",
    }
    secrets = {}
    for name, path in genuine.items():
        answer = httpx.get(f"{mesh.url(name)}{path}")
        assert answer.status_code == 200
        secrets[name] = answer.content
    attempts = 0
    for front in mesh.ports:
        for name, path in genuine.items():
            if name == front:
                continue
            for port in (mesh.ports[name].app, mesh.ports[name].public):
                for target in (f"//127.0.0.1:{port}{path}", f"http://127.0.0.1:{port}{path}"):
                    for headers in ([], [f"Authorization: Bearer {token}"]):
                        status, body, parsed = raw_request(
                            mesh.ports[front].public, f"GET {target} HTTP/1.1", headers
                        )
                        attempts += 1
                        where = f"{front} <- GET {target}"
                        assert body != secrets[name], where
                        assert 400 <= status < 500, where
                        if mesh.mode == "sidecar":
                            assert status == 400, where
                            assert parsed["reason"] == "bad_request_target", where
    # (identity -> catalog, catalog -> identity, orders -> both) x 2 ports x 2 forms x 2 auths
    assert attempts == 4 * 2 * 2 * 2


def test_a_probe_path_cannot_smuggle_an_api_call(mesh: Fleet) -> None:
    # The sidecar used to treat `/livez/../api/v1/whoami` as a public probe, drop Authorization, and
    # forward the resolved `/api/v1/whoami`. Refused now; in-process Django routes the literal path.
    token = signup_and_login(mesh)["access_token"]
    whoami = httpx.get(f"{mesh.url('orders')}/api/v1/whoami", headers=bearer(token))
    assert whoami.status_code == 200
    for target in ("/livez/../api/v1/whoami", "/livez/%2e%2e/api/v1/whoami", "/livezX/../api/v1/orders"):
        status, body, parsed = raw_request(
            mesh.ports["orders"].public, f"GET {target} HTTP/1.1", [f"Authorization: Bearer {token}"]
        )
        assert status in (400, 404), target
        assert b'"authenticated"' not in body, target
        if mesh.mode == "sidecar":
            assert (status, parsed["reason"]) == (400, "path_not_normalized"), target


@pytest.fixture(scope="module")
def identity_alone(
    mesh_registry: Registry, admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """identity by itself behind its sidecar, with gunicorn's 2 workers: the service slow clients target."""
    fleet = start_fleet(mesh_registry, admin_url, tmp_path_factory.mktemp("slow"), only=("identity",))
    try:
        yield fleet
    finally:
        stop_fleet(fleet)


def test_slow_bodies_do_not_take_identity_down(identity_alone: Fleet) -> None:
    # Eight connections (four times gunicorn's workers) announce a 1000-byte refresh and send one byte
    # a second. The sidecar holds the bodies; the app's workers keep answering the JWKS and probes.
    port = identity_alone.ports["identity"].public
    url = identity_alone.url("identity")
    slow = []
    for _ in range(8):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /api/v1/auth/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        slow.append(sock)
    try:
        answered = 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for sock in slow:
                sock.sendall(b" ")
            jwks = httpx.get(f"{url}/.well-known/jwks.json", timeout=5)
            livez = httpx.get(f"{url}/livez", timeout=5)
            assert jwks.status_code == 200
            assert jwks.json()["keys"]
            assert livez.status_code == 200
            answered += 1
            time.sleep(1)
        assert answered >= 3
    finally:
        for sock in slow:
            sock.close()


def test_metrics_are_not_served_on_the_public_port(mesh: Fleet) -> None:
    for name in mesh.ports:
        for path in ("/metrics", "/metrics/sidecar", "/metrics/"):
            response = httpx.get(f"{mesh.url(name)}{path}")
            assert response.status_code == 404, (name, path)
            assert "_seconds" not in response.text, (name, path)
        scraped = httpx.get(mesh.metrics_url(name))
        assert scraped.status_code == 200
        assert "http_server_request_duration_seconds" in scraped.text
        # The internal port is not a second way into the API.
        assert httpx.get(mesh.metrics_url(name).replace("/metrics", "/api/v1/products")).status_code == 404
        if mesh.mode == "sidecar":
            sidecar = httpx.get(mesh.metrics_url(name, "sidecar"))
            assert sidecar.status_code == 200
            assert "meshauth_sidecar_request_duration_seconds" in sidecar.text
