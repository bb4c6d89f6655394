"""One mesh per auth mode for the whole security suite: every service as real gunicorn processes
(behind their sidecars, or verifying in-process) on free loopback ports, seeded, on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from securitylib import start_fleet, stop_fleet

from mesh.fleet import Fleet
from mesh.registry import Registry


@pytest.fixture(scope="session", params=["sidecar", "inprocess"])
def mesh(
    request: pytest.FixtureRequest, mesh_registry: Registry, admin_url: str, tmp_path_factory
) -> Iterator[Fleet]:
    fleet = start_fleet(mesh_registry, admin_url, tmp_path_factory.mktemp(request.param), request.param)
    try:
        yield fleet
    finally:
        stop_fleet(fleet)
