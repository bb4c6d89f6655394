"""A whole mesh per test module: every service of `mesh.toml` as real gunicorn processes behind their
sidecars, on free loopback ports, against a fresh database on the test PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.bootstrap import drop_database
from mesh.fleet import Fleet
from mesh.registry import Registry

PASSWORD = "correct horse battery staple"


def start_fleet(
    registry: Registry, admin_url: str, run_dir: Path, mode: str = "sidecar", **options: object
) -> Fleet:
    fleet = Fleet(
        registry=registry,
        admin_url=admin_url,
        database=f"test_e2e_{uuid.uuid4().hex[:8]}",
        run_dir=run_dir,
        mode=mode,
        fixed_ports=False,
        **options,  # type: ignore[arg-type]
    )
    try:
        fleet.up(seed=True)
    except BaseException:
        fleet.stop()
        drop_database(admin_url, fleet.database)
        raise
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    fleet.stop()
    drop_database(fleet.admin_url, fleet.database)


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
