"""Real servers on loopback for the tests: a stand-in identity (JWKS, /me, service tokens) and an
echo upstream that reports what reached it. Each runs in a thread on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingUnixStreamServer
from types import SimpleNamespace
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from meshauth.keys import Algorithm, PrivateKey, generate_private_key, key_id, public_jwk, sign

# http.server refuses more than 100 header fields; the apps' gunicorn takes 128 (meshkit.gunicorn), room
# for the headers the sidecar adds to a client's 100.
http.client._MAXHEADERS = 128  # type: ignore[attr-defined]

ISSUER = "http://identity.test"
AUDIENCE = "orders"
PRINCIPAL_SECRET = "a-per-pod-secret-of-enough-length"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class _Server:
    """A ThreadingHTTPServer in a daemon thread; ``stop()`` always frees the port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _UnixServer(ThreadingUnixStreamServer):
    """An HTTP server on a unix socket (the app behind a pod's sidecar), in a daemon thread."""

    daemon_threads = True

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        super().__init__(path, handler)
        self.owner = owner
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Read a streamed body to its end, as gunicorn does before Django sees the request.
            body = b""
            while True:
                line = self.rfile.readline()
                if not line:
                    # The proxy gave up mid-body: this request never arrived whole.
                    raise ConnectionResetError("the request body ended before its last chunk")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class _IdentityHandler(_Handler):
    def do_GET(self) -> None:
        identity: FakeIdentity = self.owner.identity
        if self.path == "/.well-known/jwks.json":
            with identity.lock:
                identity.jwks_hits += 1
            if identity.fail_jwks:
                self.send_json(503, {"detail": "down"})
            else:
                self.send_json(200, {"keys": list(identity.published.values())})
        elif self.path == "/api/v1/me":
            identity.me_hits += 1
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            claims = identity.decode(token)
            if claims is None:
                self.send_json(401, {"detail": "bad token"})
            else:
                self.send_json(200, {"id": claims["sub"], "email": f"user{claims['sub']}@example.test"})
        else:
            self.send_json(404, {"detail": "not found"})

    def do_POST(self) -> None:
        identity: FakeIdentity = self.owner.identity
        body = json.loads(self.read_body() or b"{}")
        if self.path != "/api/v1/auth/service-token":
            self.send_json(404, {"detail": "not found"})
            return
        identity.token_hits += 1
        if identity.clients.get(body.get("client_id")) != body.get("client_secret"):
            self.send_json(401, {"detail": "bad credentials"})
            return
        token = identity.token(
            sub=f"service:{body['client_id']}",
            aud=body["audience"],
            token_use="service",
            client_id=body["client_id"],
            scope="catalog:reserve",
            exp=int(time.time()) + identity.service_ttl,
        )
        self.send_json(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": identity.service_ttl}
        )


class FakeIdentity:
    """Stands in for the identity service: signs tokens and publishes its JWKS over real HTTP."""

    def __init__(self, algorithm: Algorithm = "RS256") -> None:
        self.lock = threading.Lock()
        self.jwks_hits = 0
        self.me_hits = 0
        self.token_hits = 0
        self.fail_jwks = False
        self.service_ttl = 600
        self.clients = {"orders": "orders-secret"}
        self.published: dict[str, dict[str, str]] = {}
        self.private: dict[str, PrivateKey] = {}
        self.kid = self.add_key(algorithm)
        self._server: _Server | None = None
        self.start()

    def start(self, port: int = 0) -> None:
        server = _Server(_IdentityHandler, port)
        server.identity = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.port
        self.url = server.url
        self.jwks_url = f"{server.url}/.well-known/jwks.json"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def serve_unix(self, path: str) -> _UnixServer:
        """The same endpoints on a unix socket too (``stop()`` the result)."""
        return _UnixServer(path, _IdentityHandler, SimpleNamespace(identity=self))

    def add_key(self, algorithm: Algorithm = "RS256", publish: bool = True) -> str:
        key = generate_private_key(algorithm)
        kid = key_id(key)
        self.private[kid] = key
        if publish:
            self.published[kid] = public_jwk(key, kid)
        return kid

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "42",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "profile orders:read",
            "token_use": "access",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str | None = None, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        kid = kid or self.kid
        return sign(self.claims(**overrides), self.private[kid], kid, headers=headers)

    def service_token(self, **overrides: Any) -> str:
        defaults: dict[str, Any] = {"sub": "service:catalog", "token_use": "service", "client_id": "catalog"}
        return self.token(**{**defaults, **overrides})

    def decode(self, token: str) -> dict[str, Any] | None:
        try:
            kid = jwt.get_unverified_header(token)["kid"]
            key = self.private[kid].public_key()
            return dict(
                jwt.decode(token, key, algorithms=["RS256", "EdDSA"], audience=AUDIENCE, issuer=ISSUER)
            )
        except (jwt.InvalidTokenError, KeyError):
            return None


def bad_tokens(identity: FakeIdentity) -> dict[str, tuple[str, str]]:
    """Every kind of bad token: name -> (token, the reason the verifier must give)."""
    good = identity.token()
    header, payload, signature = good.split(".")
    now = int(time.time())
    kid = identity.kid
    public_pem = (
        identity.private[kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = b64({"alg": "HS256", "kid": kid, "typ": "JWT"})
    hs_input = f"{hs_header}.{payload}".encode()
    hs_token = f"{hs_header}.{payload}." + b64(hmac.new(public_pem, hs_input, hashlib.sha256).digest())
    attacker = generate_private_key("RS256")
    other_payload = b64(identity.claims(sub="1", scope="admin"))
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    jwk = public_jwk(attacker)
    return {
        "alg_none": (f"{b64({'alg': 'none', 'kid': kid})}.{payload}.", "disallowed_alg"),
        "hs256_with_public_key": (hs_token, "disallowed_alg"),
        "unknown_kid": (sign(identity.claims(), attacker, "no-such-kid"), "unknown_kid"),
        "known_kid_other_key": (sign(identity.claims(), attacker, kid), "bad_signature"),
        "jku_header": (identity.token(headers={"jku": "http://127.0.0.1:9/jwks.json"}), "bad_header"),
        "x5u_header": (identity.token(headers={"x5u": "http://127.0.0.1:9/cert.pem"}), "bad_header"),
        "embedded_jwk": (sign(identity.claims(), attacker, kid, headers={"jwk": jwk}), "bad_header"),
        "x5c_header": (identity.token(headers={"x5c": ["MIIB"]}), "bad_header"),
        "crit_header": (identity.token(headers={"crit": ["exp"], "exp": 1}), "bad_header"),
        "expired": (identity.token(iat=now - 900, nbf=now - 900, exp=now - 600), "expired"),
        "nbf_in_future": (identity.token(nbf=now + 600), "not_yet_valid"),
        "wrong_audience": (identity.token(aud="catalog"), "wrong_audience"),
        "wrong_issuer": (identity.token(iss="http://evil.test"), "wrong_issuer"),
        "missing_exp": (identity.token(exp=None), "missing_claim"),
        "missing_sub": (identity.token(sub=None), "missing_claim"),
        "missing_token_use": (identity.token(token_use=None), "missing_claim"),
        "refresh_token_use": (identity.token(token_use="refresh"), "malformed"),
        "tampered_payload": (f"{header}.{other_payload}.{signature}", "bad_signature"),
        "tampered_signature": (f"{header}.{payload}.{flipped}", "bad_signature"),
        "malformed_base64": ("!!!.@@@.###", "malformed"),
        "header_not_json": (f"{b64(b'not json')}.{payload}.{signature}", "malformed"),
        "two_segments": (f"{header}.{payload}", "malformed"),
        "four_segments": (f"{good}.extra", "malformed"),
        "huge_100kb": ("a" * 100_000, "too_large"),
    }


class Upstream:
    """An app stand-in that echoes what reached it (method, path, headers, body size)."""

    def __init__(self) -> None:
        self.hits = 0
        self.received: list[dict[str, Any]] = []
        # The sidecar's own questions to /livez (the stall guard's, HAProxy's health checks): they
        # carry no request id, which everything the sidecar forwards has. Not counted as hits.
        self.liveness_checks = 0
        server = _Server(_EchoHandler)
        server.upstream = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.port
        self.url = server.url

    def stop(self) -> None:
        self._server.stop()


class _EchoHandler(_Handler):
    def _echo(self) -> None:
        upstream: Upstream = self.owner.upstream
        if self.path == "/livez" and "X-Request-ID" not in self.headers:
            upstream.liveness_checks += 1
            self.send_json(200, {"status": "ok"})
            return
        upstream.hits += 1
        body = self.read_body()
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        if self.path.startswith("/big"):
            chunk = b"x" * 65_536
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk) * 16))
            self.end_headers()
            for _ in range(16):
                self.wfile.write(chunk)
            return
        record = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        upstream.received.append(record)
        self.send_json(200, record)

    do_GET = do_POST = do_PUT = do_DELETE = _echo


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class RawApp:
    """An app stand-in on a bare loopback socket, for answers no HTTP server library would write:
    :meth:`serve` gets each connection, in a thread of its own. Subclasses set their state first."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Answer one connection (and close it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop listening (connections being served finish on their own)."""
        self.listener.close()


class RawResponse:
    """An HTTP/1.1 response read off a socket: what an attacker's client would see."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int, request_line: str, headers: list[str] | None = None, body: bytes = b""
) -> RawResponse:
    """Send ``request_line`` exactly as given (no client library normalises it) and read the answer."""
    lines = [request_line, "Host: 127.0.0.1", *(headers or []), "Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65_536):
            chunks.append(chunk)
    return RawResponse(b"".join(chunks))
