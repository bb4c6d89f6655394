"""catalog's test fixtures: a real database (mesh.testing), a signing key and its JWKS, tokens."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mesh.testing import django_db_setup  # noqa: F401 - migrate the session's real database
from meshauth import keys
from meshauth.django import conf as meshauth_conf

ISSUER = "http://identity.test"


class Signer:
    """identity's part in a test: one key, its JWKS on a loopback HTTP server, tokens signed with it."""

    def __init__(self) -> None:
        self.key = keys.generate_private_key()
        self.kid = keys.key_id(self.key)
        body = json.dumps({"keys": [keys.public_jwk(self.key, self.kid)]}).encode()

        class JwksHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                self.send_response(200 if self.path == "/.well-known/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def token(
        self, sub: str, *, use: str, aud: str | list[str] = "catalog", scope: str = "", **extra: Any
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "token_use": use,
            **extra,
        }
        return keys.sign(claims, self.key, self.kid)

    def env(self) -> dict[str, str]:
        return {
            "MESHAUTH_MODE": "inprocess",
            "MESHAUTH_ISSUER": ISSUER,
            "MESHAUTH_AUDIENCE": "catalog",
            "MESHAUTH_JWKS_URL": self.jwks_url,
        }


@pytest.fixture(scope="session", autouse=True)
def signer() -> Iterator[Signer]:
    """Every request passes meshauth's middleware, which needs its settings before the first one."""
    signer = Signer()
    signer.thread.start()
    saved = {name: os.environ.get(name) for name in signer.env()}
    os.environ.update(signer.env())
    meshauth_conf.reset()
    try:
        yield signer
    finally:
        signer.server.shutdown()
        signer.server.server_close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        meshauth_conf.reset()


Auth = Callable[..., dict[str, str]]


@pytest.fixture
def staff(signer: Signer) -> dict[str, str]:
    """Headers of a staff user, whose token carries catalog:write."""
    token = signer.token("1", use="access", scope="profile catalog:write")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def customer(signer: Signer) -> dict[str, str]:
    token = signer.token("2", use="access", scope="profile")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def orders_service(signer: Signer) -> dict[str, str]:
    """Headers of orders calling with a service token for catalog."""
    token = signer.token("service:orders", use="service", client_id="orders")
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
