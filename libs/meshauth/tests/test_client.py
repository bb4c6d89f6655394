"""ServiceClient against a stand-in identity and a real target server on loopback."""

from __future__ import annotations

import json
import logging
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client import REGISTRY

from meshauth.client import ServiceClient, ServiceTokenError
from meshauth.context import request_context
from meshauth_testkit import FakeIdentity, RawApp, free_port


class Target:
    """A service that fails with ``fail_status`` for the first ``failures`` requests."""

    def __init__(self) -> None:
        self.failures = 0
        self.fail_status = 503
        self.requests: list[dict[str, Any]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                target.requests.append({"method": self.command, "headers": dict(self.headers.items())})
                status = target.fail_status if len(target.requests) <= target.failures else 200
                body = json.dumps({"n": len(target.requests)}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.stop()


def orders_client(identity: FakeIdentity, **options: Any) -> ServiceClient:
    """orders' client of ``identity`` (its credentials are known there), with ``options``."""
    return ServiceClient(
        identity_url=identity.url, client_id="orders", client_secret="orders-secret", **options
    )


@pytest.fixture
def client(identity: FakeIdentity) -> Iterator[ServiceClient]:
    with orders_client(identity, backoff=0.01) as service_client:
        yield service_client


def test_tokens_are_fetched_once_per_audience(
    client: ServiceClient, identity: FakeIdentity, target: Target
) -> None:
    for _ in range(3):
        assert client.get(f"{target.url}/stock", audience="catalog").status_code == 200
    client.get(f"{target.url}/x", audience="payments")
    assert identity.token_hits == 2
    sent = target.requests[0]["headers"]["Authorization"].removeprefix("Bearer ")
    public = identity.private[identity.kid].public_key()
    claims = jwt.decode(sent, public, algorithms=["RS256"], audience="catalog")
    assert (claims["token_use"], claims["client_id"]) == ("service", "orders")


def test_a_token_close_to_expiry_is_renewed(
    client: ServiceClient, identity: FakeIdentity, target: Target
) -> None:
    identity.service_ttl = 20  # the refresh margin (min(30, ttl / 2) = 10 s) leaves 10 s of validity
    client.token_refresh_margin = 30
    client.get(target.url, audience="catalog")
    client.get(target.url, audience="catalog")
    assert identity.token_hits == 1
    identity.service_ttl = 1  # a token valid for 1 s is renewed after 0.5 s
    client.forget_token("catalog")
    client.get(target.url, audience="catalog")
    time.sleep(0.6)
    client.get(target.url, audience="catalog")
    assert identity.token_hits == 3


def test_bad_credentials_raise(identity: FakeIdentity, target: Target) -> None:
    bad = ServiceClient(identity_url=identity.url, client_id="orders", client_secret="wrong")
    with bad, pytest.raises(ServiceTokenError):
        bad.get(target.url, audience="catalog")
    assert target.requests == []


def test_idempotent_requests_are_retried_on_503(client: ServiceClient, target: Target) -> None:
    target.failures = 2
    response = client.get(f"{target.url}/stock", audience="catalog")
    assert response.status_code == 200
    assert len(target.requests) == 3
    outcome = REGISTRY.get_sample_value(
        "meshauth_client_request_duration_seconds_count", {"target": "catalog", "outcome": "2xx"}
    )
    assert outcome is not None
    assert outcome >= 1


def test_posts_are_retried_only_when_declared_idempotent(client: ServiceClient, target: Target) -> None:
    target.failures = 1
    assert client.post(f"{target.url}/reservations", audience="catalog", json={}).status_code == 503
    assert len(target.requests) == 1
    target.failures = 2
    response = client.post(f"{target.url}/reservations", audience="catalog", json={}, idempotent=True)
    assert response.status_code == 200
    assert len(target.requests) == 3


def test_retries_give_up_after_the_limit(client: ServiceClient, target: Target) -> None:
    target.failures = 100
    target.fail_status = 502
    assert client.get(target.url, audience="catalog").status_code == 502
    assert len(target.requests) == client.retries + 1


def test_connection_errors_are_retried_then_raised(client: ServiceClient, identity: FakeIdentity) -> None:
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{free_port()}/stock", audience="catalog")
    errors = REGISTRY.get_sample_value(
        "meshauth_client_request_duration_seconds_count", {"target": "catalog", "outcome": "connection_error"}
    )
    assert errors is not None
    assert errors >= 1


def test_request_id_is_propagated(client: ServiceClient, target: Target) -> None:
    client.get(target.url, audience="catalog", request_id="explicit-1")
    with request_context("from-request-7", None, None):
        client.get(target.url, audience="catalog")
    client.get(target.url, audience="catalog", request_id="bad id\nwith newline")
    ids = [r["headers"]["X-Request-ID"] for r in target.requests]
    assert ids[:2] == ["explicit-1", "from-request-7"]
    assert len(ids[2]) == 32
    assert "\n" not in ids[2]


def test_the_end_users_token_is_forwarded_when_asked(
    client: ServiceClient, identity: FakeIdentity, target: Target
) -> None:
    user_token = identity.token(sub="99")
    with request_context("r", None, user_token):
        client.get(target.url, audience="catalog", as_user=True)
    assert target.requests[0]["headers"]["Authorization"] == f"Bearer {user_token}"
    assert identity.token_hits == 0
    with pytest.raises(ValueError, match="as_user"):
        client.get(target.url, audience="catalog", as_user=True)


class Silent(RawApp):
    """A service that accepts connections and never answers (frozen)."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        self._held.append(conn)

    def close(self) -> None:
        super().close()
        for conn in self._held:
            conn.close()


def test_a_service_that_timed_out_is_not_called_again_until_the_cooldown_passed(
    identity: FakeIdentity, target: Target
) -> None:
    silent = Silent()
    try:
        with orders_client(identity, read_timeout=0.5, timeout_cooldown=2.0) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post(f"{silent.url}/api/v1/reservations", audience="catalog", idempotent=True)
            assert silent.connections == 1
            # Failing at once, as a connection error (nothing was sent), for every call to it...
            for _ in range(3):
                with pytest.raises(httpx.ConnectError, match="not called"):
                    client.post(f"{silent.url}/api/v1/reservations", audience="catalog", idempotent=True)
            assert silent.connections == 1
            # ... but not for other services.
            assert client.get(f"{target.url}/x", audience="orders").status_code == 200
            time.sleep(2.0)  # the cooldown: then it is called again
            with pytest.raises(httpx.ReadTimeout):
                client.post(f"{silent.url}/api/v1/reservations", audience="catalog", idempotent=True)
            assert silent.connections == 2
    finally:
        silent.close()


# -- the token shared by a pod's workers (MESHAUTH_TOKEN_CACHE_DIR) ---------------------------------


def _worker(identity: FakeIdentity, cache_dir: Path) -> ServiceClient:
    """One gunicorn worker's client: its own process memory, the pod's shared cache directory."""
    return orders_client(identity, backoff=0.01, retries=0, token_cache_dir=cache_dir)


def _bearer(request: dict[str, Any]) -> str:
    return str(request["headers"]["Authorization"]).removeprefix("Bearer ")


def test_a_worker_started_while_identity_is_down_uses_its_siblings_token(
    identity: FakeIdentity, target: Target, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "tokens"
    with _worker(identity, cache_dir) as first:
        assert first.get(target.url, audience="catalog").status_code == 200
    identity.stop()  # identity stops answering; a recycled worker starts only now
    with _worker(identity, cache_dir) as second:
        assert second.get(target.url, audience="catalog").status_code == 200
    assert identity.token_hits == 1
    assert _bearer(target.requests[1]) == _bearer(target.requests[0])
    # Without the shared directory the same worker has no token and cannot call at all.
    with _worker(identity, tmp_path / "empty") as alone, pytest.raises(ServiceTokenError):
        alone.get(target.url, audience="catalog")
    assert len(target.requests) == 2


def test_the_shared_token_file_is_private_to_the_pod_user(
    identity: FakeIdentity, target: Target, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "tokens"
    with _worker(identity, cache_dir) as worker:
        worker.get(target.url, audience="catalog")
        worker.get(target.url, audience="payments")
    files = sorted(cache_dir.iterdir())
    assert len(files) == 2  # one per audience, no temporary file left behind
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600, 0o600]
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700


def test_a_shared_token_within_the_refresh_margin_is_not_used(
    identity: FakeIdentity, target: Target, tmp_path: Path
) -> None:
    identity.service_ttl = 1  # valid for 1 s: the margin (min(30, ttl / 2)) leaves it usable for 0.5 s
    with _worker(identity, tmp_path) as first:
        first.get(target.url, audience="catalog")
    time.sleep(0.6)
    with _worker(identity, tmp_path) as second:
        assert second.get(target.url, audience="catalog").status_code == 200
    assert identity.token_hits == 2
    assert _bearer(target.requests[1]) != _bearer(target.requests[0])


def test_a_corrupt_shared_token_file_leads_to_a_fresh_token(
    identity: FakeIdentity, target: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _worker(identity, tmp_path) as first:
        first.get(target.url, audience="catalog")
    (shared,) = tmp_path.iterdir()
    shared.write_text('{"access_token": ')  # a half-written file from some other writer
    with caplog.at_level(logging.WARNING, logger="meshauth.client"), _worker(identity, tmp_path) as second:
        assert second.get(target.url, audience="catalog").status_code == 200
        second.forget_token("catalog")
        shared.write_text("garbage")
        assert second.get(target.url, audience="catalog").status_code == 200
    assert identity.token_hits == 3
    # Logged once per process, however often the file is found broken.
    warnings = [r.getMessage() for r in caplog.records if str(shared) in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"ignoring the unreadable service token cache file {shared}: ")
    # The fresh token replaced the corrupt file: the next worker uses it without asking identity.
    identity.stop()
    with _worker(identity, tmp_path) as third:
        assert third.get(target.url, audience="catalog").status_code == 200
    assert _bearer(target.requests[-1]) == _bearer(target.requests[-2])


def test_a_refused_token_is_dropped_for_every_worker(
    identity: FakeIdentity, target: Target, tmp_path: Path
) -> None:
    with _worker(identity, tmp_path) as worker:
        worker.get(target.url, audience="catalog")
        worker.forget_token("catalog")  # what a 401 from the callee does
    assert list(tmp_path.iterdir()) == []


def test_from_env_reads_the_token_cache_directory(
    identity: FakeIdentity, target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHAUTH_IDENTITY_URL", identity.url)
    monkeypatch.setenv("MESHAUTH_CLIENT_ID", "orders")
    monkeypatch.setenv("MESHAUTH_CLIENT_SECRET", "orders-secret")
    monkeypatch.setenv("MESHAUTH_TOKEN_CACHE_DIR", str(tmp_path / "tokens"))
    with ServiceClient.from_env() as worker:
        worker.get(target.url, audience="catalog")
    assert len(list((tmp_path / "tokens").iterdir())) == 1
