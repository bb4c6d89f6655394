"""A whole mesh per test module: every service of `mesh.toml` as real gunicorn processes behind their
sidecars, on free loopback ports, against a fresh database on the test PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh import testing
from mesh.fleet import Fleet
from mesh.registry import Registry
from mesh.testing import stop_fleet

__all__ = ["PASSWORD", "bearer", "signup_and_login", "start_fleet", "stop_fleet"]

PASSWORD = "correct horse battery staple"


def start_fleet(registry: Registry, admin_url: str, run_dir: Path, **options: object) -> Fleet:
    """:func:`mesh.testing.start_fleet` with this suite's database names."""
    return testing.start_fleet(registry, admin_url, run_dir, database_prefix="test_e2e", **options)


@pytest.fixture(scope="module", params=["sidecar", "inprocess"])
def mesh(
    request: pytest.FixtureRequest, mesh_registry: Registry, admin_url: str, tmp_path_factory
) -> Iterator[Fleet]:
    """The mesh in both auth modes: every test using it runs once per mode."""
    fleet = start_fleet(mesh_registry, admin_url, tmp_path_factory.mktemp(request.param), mode=request.param)
    try:
        yield fleet
    finally:
        stop_fleet(fleet)


def signup_and_login(fleet: Fleet, email: str | None = None) -> dict[str, str]:
    """A new user's tokens, obtained the way a client would."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    identity = fleet.url("identity")
    created = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = httpx.post(f"{identity}/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return {**tokens.json(), "email": email, "id": created.json()["id"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
