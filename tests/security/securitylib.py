"""Helpers of the security suite: a mesh to attack, and the credentials an attacker's victims hold."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2

from mesh import testing
from mesh.fleet import Fleet
from mesh.registry import Registry

PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-for-security-tests"
INTROSPECTOR = "security-introspector"
INTROSPECTOR_SECRET = "security-introspector-secret-0123456789"
# Every attack here comes from 127.0.0.1: the per-address budget would soon answer 429 to every
# login of every test. Per-address limits have their own tests in identity's suite.
ADDRESS_ATTEMPTS = "100000"


def start_fleet(registry: Registry, admin_url: str, run_dir: Path, mode: str) -> Fleet:
    """The mesh to attack: a staff user, an introspecting service client, room for bursts of logins."""
    return testing.start_fleet(
        registry,
        admin_url,
        run_dir,
        database_prefix="test_security",
        mode=mode,
        # Threads let a burst of logins be checked at the same time, as a busy pod would.
        service_env={
            "identity": {
                "GUNICORN_THREADS": "4",
                "IDENTITY_LOGIN_ADDRESS_ATTEMPTS": ADDRESS_ATTEMPTS,
                "INTROSPECTOR_SECRET": INTROSPECTOR_SECRET,
            }
        },
        extra_env={"MESH_ADMIN_PASSWORD": ADMIN_PASSWORD},
        prepare=_create_introspector,
    )


def _create_introspector(fleet: Fleet) -> None:
    fleet.manage(
        fleet.registry["identity"],
        "create_service_client",
        INTROSPECTOR,
        "--audience",
        "identity",
        "--introspect",
        "--secret-env",
        "INTROSPECTOR_SECRET",
    )


@dataclass(frozen=True)
class User:
    email: str
    id: int
    access_token: str
    refresh_token: str


def signup_and_login(fleet: Fleet, email: str | None = None) -> User:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    identity = fleet.url("identity")
    created = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = login(fleet, email, PASSWORD)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return User(email, created.json()["id"], body["access_token"], body["refresh_token"])


def login(fleet: Fleet, email: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{fleet.url('identity')}/api/v1/auth/token", json={"email": email, "password": password}, timeout=30
    )


def staff_token(fleet: Fleet) -> str:
    response = login(fleet, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def service_token(fleet: Fleet, client_id: str, secret: str, audience: str) -> str:
    response = httpx.post(
        f"{fleet.url('identity')}/api/v1/auth/service-token",
        json={"client_id": client_id, "client_secret": secret, "audience": audience},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def orders_service_token(fleet: Fleet, audience: str = "catalog") -> str:
    """The token orders holds for catalog: what may reserve stock."""
    return service_token(fleet, "orders", fleet.client_credentials()["orders"]["secret"], audience)


def introspector_token(fleet: Fleet) -> str:
    return service_token(fleet, INTROSPECTOR, INTROSPECTOR_SECRET, "identity")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def row_counts(fleet: Fleet) -> dict[str, int]:
    """Rows of every table of every service's schema: what "nothing was stored" is checked against."""
    conn = psycopg2.connect(urlunsplit(urlsplit(fleet.admin_url)._replace(path=f"/{fleet.database}")))
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s)",
                [[service.schema for service in fleet.registry]],
            )
            tables = sorted(cursor.fetchall())
            counts = {}
            for schema, table in tables:
                cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"')  # noqa: S608 - catalog names
                counts[f"{schema}.{table}"] = cursor.fetchone()[0]
            return counts
    finally:
        conn.close()
