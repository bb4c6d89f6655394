"""The sidecar as a real process between a real client and a real upstream, all on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import struct
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from conftest import SidecarProcess
from meshauth.headers import is_identity_header, verify_principal_headers
from meshauth.keys import generate_private_key, sign
from meshauth.settings import ENGINES
from meshauth_testkit import (
    PRINCIPAL_SECRET,
    FakeIdentity,
    RawApp,
    Upstream,
    b64,
    bad_tokens,
    free_port,
    wait_until,
)

SPOOFED = [
    ("X-Mesh-Principal", "eyJzdWIiOiIxIn0"),
    ("x-mesh-principal-timestamp", "1"),
    ("X-MESH-PRINCIPAL-SIGNATURE", "v1=00"),
    ("X_Mesh_Principal", "eyJzdWIiOiIxIn0"),
    ("x_mesh_principal_signature", "v1=00"),
    ("X-Mesh-Anything", "admin"),
    ("X-Forwarded-User", "admin"),
    ("x_forwarded_user", "admin"),
    ("X-Remote-User", "admin"),
    ("Remote-User", "admin"),
    ("REMOTE_USER", "admin"),
    ("X-Auth-Request-User", "admin"),
    ("X-Forwarded-Email", "admin@example.test"),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sidecar(start_sidecar: Any, engine: str) -> SidecarProcess:
    """The tests that take this fixture hold for every engine (MESHAUTH_SIDECAR_ENGINE)."""
    return start_sidecar(MESHAUTH_SIDECAR_ENGINE=engine)  # type: ignore[no-any-return]


def received_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.json()["headers"]]


def header(response: httpx.Response, name: str) -> str | None:
    for key, value in received_headers(response):
        if key.lower() == name.lower():
            return value
    return None


def test_a_valid_token_reaches_the_app_as_signed_principal_headers(
    sidecar: SidecarProcess, identity: FakeIdentity
) -> None:
    token = identity.token(sub="77", scope="profile orders:write")
    response = httpx.get(
        f"{sidecar.url}/api/v1/orders?page=2",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-123"},
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-123"
    echoed = response.json()
    assert echoed["path"] == "/api/v1/orders?page=2"
    headers = dict(received_headers(response))
    principal = verify_principal_headers(headers, PRINCIPAL_SECRET)
    assert principal is not None
    assert (principal.kind, principal.subject) == ("user", "77")
    assert principal.scopes == {"profile", "orders:write"}
    assert header(response, "Authorization") == f"Bearer {token}"
    assert header(response, "X-Request-ID") == "req-123"
    assert header(response, "X-Forwarded-For") == "127.0.0.1"
    assert header(response, "X-Forwarded-Proto") == "http"
    with pytest.raises(Exception, match="signature"):
        verify_principal_headers(headers, "another-pod-secret-value")


def test_anonymous_requests_are_forwarded_without_principal(
    sidecar: SidecarProcess, upstream: Upstream
) -> None:
    response = httpx.get(f"{sidecar.url}/api/v1/products")
    assert response.status_code == 200
    assert not [name for name, _ in received_headers(response) if is_identity_header(name)]
    assert header(response, "Authorization") is None
    assert len(header(response, "X-Request-ID") or "") == 32  # generated


def test_bad_tokens_get_401_and_never_reach_the_app(
    sidecar: SidecarProcess, identity: FakeIdentity, upstream: Upstream
) -> None:
    # One sidecar for every case (a process per case would be slow); each case is reported by name.
    answers = {}
    for name, (token, _reason) in bad_tokens(identity).items():
        response = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
        json = response.headers.get("Content-Type") == "application/json"
        answers[name] = (
            response.status_code,
            response.json()["reason"] if json else response.text,
            response.headers.get("WWW-Authenticate"),
        )
    expected = {
        name: (401, reason, 'Bearer error="invalid_token"')
        for name, (_, reason) in bad_tokens(identity).items()
    }
    if sidecar.engine == "haproxy":
        # A request head larger than HAProxy's buffer (the header limit plus an oversized token) is
        # refused by HAProxy itself, with its own page, before any rule runs.
        assert answers["huge_100kb"][0] == 400
        answers.pop("huge_100kb")
        expected.pop("huge_100kb")
    assert answers == expected
    assert len(answers) >= 20
    assert upstream.hits == 0


def test_a_token_accepted_before_is_refused_once_it_expires(
    start_sidecar: Any, identity: FakeIdentity, engine: str
) -> None:
    # Accepted tokens are remembered (both engines); the expiry is still checked on every request.
    sidecar = start_sidecar(MESHAUTH_LEEWAY="0", MESHAUTH_SIDECAR_ENGINE=engine)
    token = identity.token(exp=int(time.time()) + 2)
    url = f"{sidecar.url}/api/v1/orders"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    time.sleep(3)
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()["reason"]) == (401, "expired")


def test_a_token_changed_after_it_was_accepted_is_checked_again(
    sidecar: SidecarProcess, identity: FakeIdentity, upstream: Upstream
) -> None:
    token = identity.token(sub="3")
    url = f"{sidecar.url}/api/v1/orders"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    header, payload, signature = token.split(".")
    forged = b64({**identity.claims(sub="3"), "sub": "1", "scope": "admin"})
    for changed in (f"{header}.{forged}.{signature}", f"{header}.{payload}.{signature[:-2]}AA", f"{token}x"):
        response = httpx.get(url, headers={"Authorization": f"Bearer {changed}"})
        assert response.status_code == 401, changed
    assert upstream.hits == 1


def test_two_authorization_headers_are_refused(
    sidecar: SidecarProcess, identity: FakeIdentity, upstream: Upstream
) -> None:
    token = identity.token()
    response = httpx.get(
        f"{sidecar.url}/api/v1/orders",
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "malformed"
    assert upstream.hits == 0


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Digest abc", "Token abc"])
def test_other_authorization_schemes_are_refused(
    sidecar: SidecarProcess, upstream: Upstream, value: str
) -> None:
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"Authorization": value})
    assert response.status_code == 401
    assert upstream.hits == 0


@pytest.mark.parametrize("authenticated", [False, True])
def test_spoofed_identity_headers_never_reach_the_app(
    sidecar: SidecarProcess, identity: FakeIdentity, authenticated: bool
) -> None:
    headers = list(SPOOFED)
    if authenticated:
        headers.append(("Authorization", f"Bearer {identity.token(sub='5')}"))
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers=headers)
    assert response.status_code == 200
    received = received_headers(response)
    spoofed_values = {value for _, value in SPOOFED}
    assert not [(k, v) for k, v in received if v in spoofed_values]
    identity_headers = [k for k, _ in received if is_identity_header(k)]
    if authenticated:
        # Names in any case (HAProxy writes them in lower case, as HTTP/2 does).
        assert sorted(name.lower() for name in identity_headers) == sorted(
            ["x-mesh-principal", "x-mesh-principal-timestamp", "x-mesh-principal-signature"]
        )
        principal = verify_principal_headers(dict(received), PRINCIPAL_SECRET)
        assert principal is not None
        assert principal.subject == "5"
    else:
        assert identity_headers == []


def test_public_paths_skip_authentication(sidecar: SidecarProcess, upstream: Upstream) -> None:
    response = httpx.get(f"{sidecar.url}/livez", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 200
    assert header(response, "Authorization") is None
    # Prefixes match whole path segments only.
    response = httpx.get(f"{sidecar.url}/livezzz", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 401


def test_a_probe_path_is_public_exactly_and_a_slash_entry_is_a_prefix(
    start_sidecar: Any, engine: str
) -> None:
    """The contract's probe rule (exact, as meshkit answers them); an entry ending in `/` is a prefix."""
    sidecar = start_sidecar(MESHAUTH_PUBLIC_PATHS="/livez,/readyz,/static/", MESHAUTH_SIDECAR_ENGINE=engine)
    garbage = {"Authorization": "Bearer garbage"}
    for path in ("/livez/anything", "/readyz/", "/static"):
        assert httpx.get(f"{sidecar.url}{path}", headers=garbage).status_code == 401, path
    for path in ("/readyz", "/static/app.css", "/static/admin/base.css"):
        response = httpx.get(f"{sidecar.url}{path}", headers=garbage)
        assert response.status_code == 200, path
        assert header(response, "Authorization") is None


def test_a_request_body_streams_through(sidecar: SidecarProcess, identity: FakeIdentity) -> None:
    body = uuid.uuid4().bytes * 40_000  # 640 kB
    response = httpx.post(
        f"{sidecar.url}/api/v1/orders", content=body, headers={"Authorization": f"Bearer {identity.token()}"}
    )
    assert response.status_code == 200
    assert response.json()["body_length"] == len(body)
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_response_streams_back(sidecar: SidecarProcess) -> None:
    with httpx.stream("GET", f"{sidecar.url}/big") as response:
        assert response.status_code == 200
        data = b"".join(response.iter_bytes())
    assert data == b"x" * 65_536 * 16


def test_body_and_header_caps(start_sidecar: Any, upstream: Upstream) -> None:
    sidecar = start_sidecar(MESHAUTH_SIDECAR_MAX_BODY_BYTES="1000", MESHAUTH_SIDECAR_MAX_HEADER_BYTES="4096")
    response = httpx.post(f"{sidecar.url}/api/v1/orders", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.json()["reason"] == "body_too_large"

    def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 500

    response = httpx.post(f"{sidecar.url}/api/v1/orders", content=chunks())
    assert response.status_code == 413
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"X-Padding": "p" * 5000})
    assert response.status_code == 431
    # A streamed body starts flowing before its size is known, but the app never gets it whole.
    assert upstream.received == []
    assert httpx.post(f"{sidecar.url}/api/v1/orders", content=b"x" * 1000).status_code == 200


def test_an_inherited_socket_queues_connections_until_the_next_sidecar(start_sidecar: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        first = start_sidecar(sock=listener)
        assert httpx.get(f"{first.url}/livez").status_code == 200
        first.stop()
        # No sidecar runs, but the socket its supervisor holds stays open: a client waits instead of
        # being refused, and the next sidecar on the same socket answers it.
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(httpx.get(f"{first.url}/livez", timeout=60)))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive()
        start_sidecar(sock=listener)
        waiting.join(60)
        assert [answer.status_code for answer in answers] == [200]


def test_a_sidecar_replaced_on_its_socket_fails_no_request_of_a_keep_alive_client(start_sidecar: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        old = start_sidecar(sock=listener)
        statuses: list[int] = []
        errors: list[str] = []
        done = threading.Event()

        def client() -> None:
            # One pooled keep-alive client, as services and load balancers are.
            with httpx.Client(timeout=10) as http:
                while not done.is_set():
                    try:
                        statuses.append(http.get(f"{old.url}/livez").status_code)
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            time.sleep(1)
            start_sidecar(sock=listener)  # the replacement, on the same socket
            old.process.send_signal(signal.SIGTERM)
            assert old.process.wait(20) == 0
            time.sleep(1)
        finally:
            done.set()
            thread.join(20)
        assert errors == []
        assert len(statuses) > 20
        assert set(statuses) == {200}


ANSWER = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class CuttingApp(RawApp):
    """Answers the first request of each connection (keep-alive), then cuts the connection on the
    next one without answering: what a gunicorn worker that is stopping does to a pooled connection."""

    def __init__(self, reset: bool = False) -> None:
        self.reset = reset  # cut with a TCP reset (a killed process with unread data), not a close
        self.answered: list[bytes] = []
        self.cut = 0
        super().__init__()

    @staticmethod
    def _read(reader: Any) -> bytes | None:
        length = 0
        while True:
            line = reader.readline()
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                return bytes(reader.read(length))
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)

    def serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            body = self._read(reader)
            if body is None:
                return
            self.answered.append(body)
            conn.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
            if self._read(reader) is not None:
                self.cut += 1
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_request_with_an_idempotency_key_is_replayed_when_the_app_cuts_a_pooled_connection(
    start_sidecar: Any, reset: bool, engine: str
) -> None:
    app = CuttingApp(reset)
    try:
        # No stall guard: its liveness questions (HAProxy asks on its own) would be connections to cut.
        sidecar = start_sidecar(
            MESHAUTH_SIDECAR_UPSTREAM=app.url,
            MESHAUTH_SIDECAR_ENGINE=engine,
            MESHAUTH_SIDECAR_STALL_TIMEOUT="0",
        )
        body = {"items": [{"sku": "MUG-001", "qty": 1}]}
        with httpx.Client(timeout=10) as client:
            first = client.post(f"{sidecar.url}/api/v1/orders", json=body, headers={"Idempotency-Key": "k1"})
            # Sent on the pooled connection, which the app cuts: tried again on a fresh one.
            second = client.post(f"{sidecar.url}/api/v1/orders", json=body, headers={"Idempotency-Key": "k2"})
            assert [first.status_code, second.status_code] == [201, 201]
            assert app.cut == 1
            assert len(app.answered) == 2
            assert all(b"MUG-001" in answered for answered in app.answered)
            # Without a key the app may have acted on it: the sidecar must not send it twice. The Python
            # engine answers 502; HAProxy closes the client's keep-alive connection without an answer,
            # as it does for any request it may not send again.
            if sidecar.engine == "haproxy":
                with pytest.raises(httpx.RemoteProtocolError):
                    client.post(f"{sidecar.url}/api/v1/orders", json=body)
            else:
                assert client.post(f"{sidecar.url}/api/v1/orders", json=body).status_code == 502
            assert app.cut == 2
            assert len(app.answered) == 2
    finally:
        app.close()


@pytest.mark.parametrize("listen", ["fd://", "fd://three", "localhost"])
def test_a_bad_listen_address_is_refused_at_start(listen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshauth.sidecar.config import ConfigError, SidecarConfig

    monkeypatch.setenv("MESHAUTH_SIDECAR_LISTEN", listen)
    for name, value in {
        "MESHAUTH_ISSUER": "http://identity.test",
        "MESHAUTH_AUDIENCE": "orders",
        "MESHAUTH_JWKS_URL": "http://identity.test/jwks",
        "MESHAUTH_PRINCIPAL_SECRET": PRINCIPAL_SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="MESHAUTH_SIDECAR_LISTEN"):
        SidecarConfig.from_env()


def test_upstream_down_is_a_retryable_503_json(start_sidecar: Any, engine: str) -> None:
    sidecar = start_sidecar(
        MESHAUTH_SIDECAR_UPSTREAM=f"http://127.0.0.1:{free_port()}", MESHAUTH_SIDECAR_ENGINE=engine
    )
    response = httpx.get(f"{sidecar.url}/api/v1/orders")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["reason"] == "upstream_unavailable"
    # What the SLO alerts count as the app's errors when the app cannot count them itself.
    errors = 'meshauth_sidecar_upstream_errors_total{kind="connect"} 1.0'
    wait_until(lambda: errors in httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text, timeout=5)


def test_sidecar_metrics_are_its_own(start_sidecar: Any, identity: FakeIdentity, engine: str) -> None:
    # The same series whichever engine serves (HAProxy's are counted from its access lines, a moment
    # after the answer): the charts' dashboards and SLO alerts read these names and labels.
    sidecar = start_sidecar(MESHAUTH_SIDECAR_ENGINE=engine)
    url = f"{sidecar.url}/api/v1/orders"
    httpx.get(url, headers={"Authorization": f"Bearer {identity.token()}"})
    httpx.get(url, headers={"Authorization": "Bearer x.y.z"})
    httpx.get(url)
    httpx.get(url, headers=[(f"X-Filler-{n}", "1") for n in range(101)])
    httpx.get(f"{sidecar.url}/livez")
    requests = "meshauth_sidecar_request_duration_seconds_count"
    expected = [
        'meshauth_sidecar_auth_decisions_total{reason="",result="accepted"} 1.0',
        'meshauth_sidecar_auth_decisions_total{reason="malformed",result="rejected"} 1.0',
        'meshauth_sidecar_auth_decisions_total{reason="",result="anonymous"} 1.0',
        'meshauth_sidecar_rejected_requests_total{reason="too_many_headers"} 1.0',
        # The two answered by the app, the two refused; the probe is not counted.
        f'{requests}{{http_request_method="GET",http_response_status_code="200"}} 2.0',
        f'{requests}{{http_request_method="GET",http_response_status_code="401"}} 1.0',
        f'{requests}{{http_request_method="GET",http_response_status_code="431"}} 1.0',
        'meshauth_sidecar_jwks_refresh_total{outcome="success"} 1.0',
    ]

    def exposition() -> str:
        return httpx.get(f"{sidecar.metrics_url}/metrics/sidecar").text

    with contextlib.suppress(AssertionError):  # the assertion below says which series are missing
        wait_until(lambda: all(line in exposition() for line in expected), timeout=5)
    text = exposition()
    assert [line for line in expected if line not in text] == []
    assert "meshauth_sidecar_jwks_age_seconds" in text
    assert "meshauth_sidecar_upstream_errors_total{" not in text
    # Nothing of the app's (or of the default registry) leaks into the sidecar's exposition.
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert names
    assert all(name.startswith("meshauth_sidecar_") for name in names)
    assert "/metrics" not in sidecar.log.read_text()


def test_jwks_down_keeps_last_good_keys_and_rotation_needs_no_restart(
    start_sidecar: Any, identity: FakeIdentity
) -> None:
    sidecar = start_sidecar(MESHAUTH_JWKS_TTL="1", MESHAUTH_JWKS_MIN_REFRESH_INTERVAL="1")
    url = f"{sidecar.url}/api/v1/orders"
    assert httpx.get(url, headers={"Authorization": f"Bearer {identity.token()}"}).status_code == 200
    identity.fail_jwks = True
    time.sleep(2.2)  # past the TTL: refreshes fail
    assert httpx.get(url, headers={"Authorization": f"Bearer {identity.token(sub='8')}"}).status_code == 200
    identity.fail_jwks = False
    new_kid = identity.add_key("EdDSA")
    time.sleep(1.2)
    response = httpx.get(url, headers={"Authorization": f"Bearer {identity.token(kid=new_kid, sub='9')}"})
    assert response.status_code == 200
    assert verify_principal_headers(dict(received_headers(response)), PRINCIPAL_SECRET).subject == "9"  # type: ignore[union-attr]


def test_jwks_unavailable_past_max_staleness_is_503_not_500(
    start_sidecar: Any, identity: FakeIdentity, engine: str
) -> None:
    sidecar = start_sidecar(
        MESHAUTH_JWKS_TTL="1",
        MESHAUTH_JWKS_MIN_REFRESH_INTERVAL="1",
        MESHAUTH_JWKS_MAX_STALENESS="1",
        MESHAUTH_SIDECAR_ENGINE=engine,
    )
    identity.fail_jwks = True
    time.sleep(2.2)
    response = httpx.get(
        f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {identity.token()}"}
    )
    assert response.status_code == 503
    assert response.json()["reason"] == "jwks_unavailable"


def test_a_flood_of_random_kids_costs_at_most_one_jwks_fetch(
    sidecar: SidecarProcess, identity: FakeIdentity
) -> None:
    attacker = generate_private_key("EdDSA")
    hits_before = identity.jwks_hits
    with httpx.Client() as client:
        for _ in range(100):
            token = sign(identity.claims(), attacker, uuid.uuid4().hex)
            response = client.get(
                f"{sidecar.url}/api/v1/orders", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401
            assert response.json()["reason"] == "unknown_kid"
    assert identity.jwks_hits - hits_before <= 1


def test_sigterm_drains_in_flight_requests(sidecar: SidecarProcess) -> None:
    result: dict[str, Any] = {}

    def slow() -> None:
        result["response"] = httpx.get(f"{sidecar.url}/slow", timeout=10)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    sidecar.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sidecar.url}/api/v1/orders", timeout=2)
    thread.join(10)
    assert result["response"].status_code == 200
    assert sidecar.process.wait(10) == 0
