"""The sidecar talks to its own app only: request targets sent as an attacker sends them, raw, over a socket.

``other`` is a second server on loopback, standing in for another service's app: nothing may reach it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import SidecarProcess
from meshauth_testkit import (
    AUDIENCE,
    ISSUER,
    PRINCIPAL_SECRET,
    FakeIdentity,
    Upstream,
    raw_request,
    wait_until,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SidecarProcess, FakeIdentity, Upstream, Upstream]]:
    """One sidecar (with its identity and app) for the many cases here, and another app beside it."""
    identity, upstream, other = FakeIdentity(), Upstream(), Upstream()
    log = Path(tempfile.mkdtemp()) / "sidecar.log"
    sidecar = SidecarProcess(
        {
            "MESHAUTH_SIDECAR_UPSTREAM": upstream.url,
            "MESHAUTH_ISSUER": ISSUER,
            "MESHAUTH_AUDIENCE": AUDIENCE,
            "MESHAUTH_JWKS_URL": identity.jwks_url,
            "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
        },
        log,
    )
    yield sidecar, identity, upstream, other
    sidecar.stop()
    for server in (identity, upstream, other):
        server.stop()
    shutil.rmtree(log.parent, ignore_errors=True)


# Every request-target form that names a host, or that a URL parser would read as naming one.
FOREIGN_TARGETS = [
    "//127.0.0.1:{port}/api/v1/products",
    "///127.0.0.1:{port}/api/v1/products",
    "//user:pw@127.0.0.1:{port}/api/v1/products",
    "http://127.0.0.1:{port}/api/v1/products",
    "https://127.0.0.1:{port}/api/v1/products",
    "HTTP://127.0.0.1:{port}/.well-known/jwks.json",
    "http://127.0.0.1:{port}",
    "*",
]


@pytest.mark.parametrize("with_token", [False, True], ids=["anonymous", "bearer"])
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
@pytest.mark.parametrize("form", FOREIGN_TARGETS)
def test_a_target_naming_another_host_is_refused_and_reaches_nobody(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], form: str, method: str, with_token: bool
) -> None:
    sidecar, identity, upstream, other = shared
    hits = upstream.hits
    target = form.format(port=other.port)
    headers = [f"Authorization: Bearer {identity.token()}"] if with_token else []
    response = raw_request(
        sidecar.port, f"{method} {target} HTTP/1.1", headers, body=b"{}" if method == "POST" else b""
    )
    assert response.status == 400, response.status_line
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["reason"] == "bad_request_target"
    assert response.headers["x-request-id"]
    assert other.hits == 0  # the other service never saw the request, the token or the principal
    assert upstream.hits == hits


def test_connect_is_refused(shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream]) -> None:
    sidecar, _, upstream, other = shared
    hits = upstream.hits
    response = raw_request(sidecar.port, f"CONNECT 127.0.0.1:{other.port} HTTP/1.1")
    assert response.status == 400, response.status_line
    assert response.json()["reason"] == "bad_request_target"
    assert (other.hits, upstream.hits) == (0, hits)


@pytest.mark.parametrize(
    "target",
    [
        "/@127.0.0.1:{port}/x",
        "/%2F%2F127.0.0.1:{port}/x",
        "/%2F127.0.0.1:{port}/x",
        "/a%2Fb/c?next=//127.0.0.1:{port}/&u=http://127.0.0.1:{port}/x",
        "/\\\\127.0.0.1:{port}/x",
        "/x;127.0.0.1:{port}",
    ],
)
def test_odd_but_plain_paths_go_to_the_own_app_verbatim(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], target: str
) -> None:
    sidecar, _, _, other = shared
    target = target.format(port=other.port)
    response = raw_request(sidecar.port, f"GET {target} HTTP/1.1")
    assert response.status == 200, response.status_line
    assert response.json()["path"] == target  # byte for byte, not re-encoded, not joined
    assert other.hits == 0


@pytest.mark.parametrize(
    "target",
    [
        "/livez/../api/v1/whoami",
        "/livez/%2e%2e/api/v1/whoami",
        "/livez/%2E%2E%2Fapi/v1/whoami",
        "/livez%2F..%2Fapi/v1/whoami",
        "/livezX/../api/v1/orders",
        "/api/./v1/orders",
        "/api/v1/orders/..",
        "/..",
    ],
)
def test_dot_segments_are_refused_not_resolved(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], target: str
) -> None:
    sidecar, _, upstream, _ = shared
    hits = upstream.hits
    # A proxy that resolves them checks one path and forwards another: ``/livez/../api/v1/whoami``
    # passed as a public probe (Authorization dropped) and reached the API.
    response = raw_request(sidecar.port, f"GET {target} HTTP/1.1", ["Authorization: Bearer garbage"])
    assert response.status == 400, response.status_line
    assert response.json()["reason"] == "path_not_normalized"
    assert upstream.hits == hits


def test_probe_paths_match_exactly(sidecar: SidecarProcess, upstream: Upstream) -> None:
    # Public: exactly /livez (and below it, by whole segments), so a bad token is not looked at.
    assert httpx.get(f"{sidecar.url}/livez", headers={"Authorization": "Bearer garbage"}).status_code == 200
    for path in ("/livezX", "/livez.json", "/readyzz"):
        response = httpx.get(f"{sidecar.url}{path}", headers={"Authorization": "Bearer garbage"})
        assert response.status_code == 401, path
    # Unmeasured and unlogged: exactly the probe paths; a look-alike is measured and logged.
    httpx.get(f"{sidecar.url}/livezX/orders")
    httpx.get(f"{sidecar.url}/readyz")
    metrics = httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("meshauth_sidecar_request_duration_seconds_count")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == 4  # 3 × 401 + /livezX/orders
    # Access lines are written in batches (at most 0.2 s late): wait for the one that must be there.
    wait_until(lambda: '"path": "/livezX/orders"' in sidecar.log.read_text())
    log = sidecar.log.read_text()
    assert '"path": "/livezX/orders"' in log
    assert '"path": "/readyz"' not in log
    assert '"path": "/livez"' not in log


@pytest.mark.parametrize("length", [4097, 4150, 5000, 100_000])
def test_an_overlong_target_is_a_json_414(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], length: int
) -> None:
    # Just over the limit (the handler's check) and far over it (the parser's): the same answer.
    sidecar, _, upstream, _ = shared
    hits = upstream.hits
    prefix = "/api/v1/orders?q="
    response = raw_request(sidecar.port, f"GET {prefix}{'a' * (length - len(prefix))} HTTP/1.1")
    assert response.status == 414, response.status_line
    assert response.json()["reason"] == "uri_too_long"
    assert upstream.hits == hits
    ok = raw_request(sidecar.port, f"GET {prefix}{'a' * (4096 - len(prefix))} HTTP/1.1")
    assert ok.status == 200
    assert "Traceback" not in sidecar.log.read_text()


@pytest.mark.parametrize("count", [101, 150, 5000])
def test_too_many_headers_is_a_json_431(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], count: int
) -> None:
    sidecar, _, upstream, _ = shared
    hits = upstream.hits
    # raw_request adds Host and Connection: `count` header fields in all.
    padding = [f"X-Pad-{index}: {index}" for index in range(count - 2)]
    response = raw_request(sidecar.port, "GET /api/v1/orders HTTP/1.1", padding)
    assert response.status == 431, response.status_line
    assert response.json()["reason"] == "too_many_headers"
    assert upstream.hits == hits
    exactly = [f"X-Pad-{index}: {index}" for index in range(100 - 2)]
    assert raw_request(sidecar.port, "GET /api/v1/orders HTTP/1.1", exactly).status == 200


@pytest.mark.parametrize(
    "request_line",
    ["GET /a b HTTP/1.1", "G\x01T / HTTP/1.1", "GET /a\x00b HTTP/1.1", "GET / HTTP/9.9", "GET x/y HTTP/1.1"],
)
def test_malformed_requests_get_json_and_one_warning_line(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream], request_line: str
) -> None:
    sidecar, _, upstream, _ = shared
    hits = upstream.hits
    before = sidecar.log.read_text().count("\n")
    response = raw_request(sidecar.port, request_line)
    assert 400 <= response.status < 500, response.status_line
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["reason"] in ("malformed_request", "bad_request_target")
    assert upstream.hits == hits
    time.sleep(0.2)
    new_lines = [json.loads(line) for line in sidecar.log.read_text().splitlines()[before:]]
    warnings = [line for line in new_lines if line["level"] == "WARNING"]
    assert len(warnings) == 1, new_lines
    assert "malformed request" in warnings[0]["message"]
    assert not [line for line in new_lines if "exc_info" in line or line["level"] == "ERROR"]


def test_metrics_are_on_their_own_listener_only(
    shared: tuple[SidecarProcess, FakeIdentity, Upstream, Upstream],
) -> None:
    sidecar, _, upstream, _ = shared
    scraped = httpx.get(f"{sidecar.metrics_url}/metrics/sidecar")
    assert scraped.status_code == 200
    assert "meshauth_sidecar_request_duration_seconds" in scraped.text
    # The public port has no metrics of its own: the path is the app's to answer like any other.
    public = httpx.get(f"{sidecar.url}/metrics/sidecar")
    assert "meshauth_sidecar_" not in public.text
    assert public.json()["path"] == "/metrics/sidecar"  # the echo app got it, as any unknown path
    # The metrics listener forwards nothing.
    hits = upstream.hits
    for path in ("/api/v1/orders", "/metrics", "/livez", "//127.0.0.1:1/x"):
        response = raw_request(sidecar.metrics_port, f"GET {path} HTTP/1.1")
        assert response.status in (400, 404), path
    assert upstream.hits == hits
