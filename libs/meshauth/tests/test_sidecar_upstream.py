"""What a request costs the sidecar: one pooled keep-alive connection to the app (TCP or a unix
socket), principal headers signed without redoing per-token work, and a batched access log."""

from __future__ import annotations

import asyncio
import json
import os
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshauth.headers import PrincipalSigner, sign_principal, verify_principal_headers
from meshauth.principal import Principal
from meshauth.sidecar import logging as sidecar_logging
from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth_testkit import PRINCIPAL_SECRET, FakeIdentity

SECRET = "a-principal-secret-of-32-bytes!!"


class _CountingHandler(BaseHTTPRequestHandler):
    """Answers 200 with the principal it received; counts the connections it was given."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "path": self.path,
                "principal": self.headers.get("X-Mesh-Principal"),
                "host": self.headers["Host"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    connections = 0

    def get_request(self) -> tuple[Any, Any]:
        # BaseHTTPRequestHandler expects an (address, port) peer; a unix peer has none.
        sock, _ = super().get_request()
        return sock, ("unix", 0)


@pytest.fixture(params=["tcp", "unix"])
def app(request: pytest.FixtureRequest) -> Iterator[tuple[str, socketserver.BaseServer]]:
    """The app stand-in, on loopback TCP or on a unix socket; yields (MESHAUTH_SIDECAR_UPSTREAM, server)."""
    server: socketserver.BaseServer
    if request.param == "tcp":
        server = _TCPServer(("127.0.0.1", 0), _CountingHandler)
        upstream = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[index]
    else:
        directory = tempfile.mkdtemp(prefix="meshauth-")
        path = os.path.join(directory, "app.sock")
        server = _UnixServer(path, _CountingHandler)
        upstream = f"unix:{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        if request.param == "unix":
            os.unlink(path)
            os.rmdir(directory)


def test_requests_reuse_one_connection_to_the_app(
    app: tuple[str, socketserver.BaseServer], start_sidecar: Callable[..., Any], identity: FakeIdentity
) -> None:
    upstream, server = app
    sidecar = start_sidecar(MESHAUTH_SIDECAR_UPSTREAM=upstream)
    token = identity.token()
    with httpx.Client() as client:
        for n in range(20):
            answer = client.get(
                f"{sidecar.url}/api/v1/item/{n}",
                headers={"Authorization": f"Bearer {token}", "Host": "orders.example"},
            )
            assert answer.status_code == 200, answer.text
            seen = answer.json()
            assert seen["path"] == f"/api/v1/item/{n}"
            assert seen["principal"], "the verified principal reached the app"
            assert seen["host"] == "orders.example", "the client's Host reaches the app, not the socket's"
    # Sequential requests: one connection, kept alive (two if the app closed an idle one meanwhile).
    assert server.connections <= 2, f"{server.connections} connections for 20 requests"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("unix:relative.sock", "unix:/absolute/path"),
        ("ftp://127.0.0.1:1", "unix:/path"),
        ("http://h:1/x", "host:port"),
    ],
)
def test_upstream_must_be_a_url_or_an_absolute_socket(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    for name, value in {
        "MESHAUTH_ISSUER": "i",
        "MESHAUTH_AUDIENCE": "a",
        "MESHAUTH_JWKS_URL": "http://127.0.0.1:1/jwks",
        "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
        "MESHAUTH_SIDECAR_UPSTREAM": raw,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        SidecarConfig.from_env()


def test_a_unix_socket_upstream_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MESHAUTH_ISSUER": "i",
        "MESHAUTH_AUDIENCE": "a",
        "MESHAUTH_JWKS_URL": "http://127.0.0.1:1/jwks",
        "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
        "MESHAUTH_SIDECAR_UPSTREAM": "unix:/run/gunicorn/app.sock",
    }.items():
        monkeypatch.setenv(name, value)
    config = SidecarConfig.from_env()
    assert config.upstream_socket == "/run/gunicorn/app.sock"


def _principal(subject: str = "7") -> Principal:
    return Principal.from_claims(
        {
            "sub": subject,
            "iss": "i",
            "aud": "mesh",
            "token_use": "access",
            "scope": "profile",
            "exp": 4_000_000_000,
        }
    )


def test_the_signer_signs_like_sign_principal_and_renews_each_second() -> None:
    signer = PrincipalSigner(SECRET)
    principal = _principal()
    first = signer.sign(principal, "token-a", now=1_000)
    assert dict(first) == sign_principal(principal, SECRET, now=1_000)
    assert verify_principal_headers(dict(first), SECRET, now=1_000) == principal
    later = signer.sign(principal, "token-a", now=1_001)
    assert later["X-Mesh-Principal-Timestamp"] == "1001"
    assert verify_principal_headers(dict(later), SECRET, now=1_001) == principal
    other = _principal("8")
    assert (
        verify_principal_headers(dict(signer.sign(other, "token-b", now=1_001)), SECRET, now=1_001) == other
    )


def test_the_signer_forgets_old_tokens_instead_of_growing() -> None:
    signer = PrincipalSigner(SECRET, max_tokens=10)
    for n in range(100):
        signer.sign(_principal(str(n)), f"token-{n}", now=1_000)
    assert len(signer._signed) <= 10


def _log_one(path: str, status: int = 200, user_agent: str | None = 'curl/8 "quoted"') -> None:
    logger = sidecar_logging.AccessLogger(sidecar_logging.logging.getLogger("meshauth.sidecar.access"))
    logger.log("GET", path, status, "req-1", 0.0123, "10.1.2.3", user_agent)


def test_access_lines_are_json_written_in_one_batch(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> tuple[str, str]:
        _log_one('/api/v1/orders/"quoted"')
        _log_one("/livez")  # a probe: never logged
        _log_one("/api/v1/whoami", 401, user_agent=None)
        before = capsys.readouterr().out
        await asyncio.sleep(sidecar_logging.FLUSH_SECONDS * 3)
        return before, capsys.readouterr().out

    before, after = asyncio.run(scenario())
    assert before == "", "lines wait for the batch"
    lines = [json.loads(line) for line in after.splitlines()]
    assert [(e["path"], e["status"]) for e in lines] == [
        ('/api/v1/orders/"quoted"', 200),
        ("/api/v1/whoami", 401),
    ]
    entry = lines[0]
    assert entry["logger"] == "meshauth.sidecar.access"
    assert entry["level"] == "INFO"
    assert entry["method"] == "GET"
    assert entry["request_id"] == "req-1"
    assert entry["duration_ms"] == 12.3
    assert entry["message"] == 'GET /api/v1/orders/"quoted" 200'
    assert entry["time"].endswith("Z")
    # What gunicorn's line had, which the sidecar's stands for behind it.
    assert entry["remote_addr"] == "10.1.2.3"
    assert entry["user_agent"] == 'curl/8 "quoted"'
    assert lines[1]["user_agent"] is None


def test_access_lines_are_flushed_at_shutdown(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        _log_one("/api/v1/orders")
        sidecar_logging.ACCESS_LINES.flush()

    asyncio.run(scenario())
    assert json.loads(capsys.readouterr().out)["path"] == "/api/v1/orders"


def test_the_sidecar_flushes_its_access_log_when_it_stops(
    start_sidecar: Callable[..., Any], identity: FakeIdentity, tmp_path: Path
) -> None:
    sidecar = start_sidecar()
    httpx.get(f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {identity.token()}"})
    sidecar.stop()
    lines = [json.loads(line) for line in sidecar.log.read_text().splitlines() if line.startswith("{")]
    assert [e["path"] for e in lines if e.get("logger") == "meshauth.sidecar.access"] == ["/api/v1/orders"]
