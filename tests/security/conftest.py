"""The meshes the security suite attacks: every service as real gunicorn processes (behind their
sidecars, or verifying in-process) on free loopback ports, seeded, each on a fresh database.

One mesh per auth mode for the whole suite, started when a test first needs it: tests make their
own users and products, so they can share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from securitylib import start_fleet

from mesh.fleet import Fleet
from mesh.registry import Registry
from mesh.testing import stop_fleet


class Meshes:
    def __init__(self, registry: Registry, admin_url: str, run_dir: Path) -> None:
        self.registry, self.admin_url, self.run_dir = registry, admin_url, run_dir
        self.started: dict[str, Fleet] = {}

    def get(self, mode: str) -> Fleet:
        if mode not in self.started:
            self.started[mode] = start_fleet(self.registry, self.admin_url, self.run_dir / mode, mode)
        return self.started[mode]

    def stop(self) -> None:
        for fleet in self.started.values():
            stop_fleet(fleet)


@pytest.fixture(scope="session")
def meshes(
    mesh_registry: Registry, admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Meshes]:
    started = Meshes(mesh_registry, admin_url, tmp_path_factory.mktemp("security"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["sidecar", "inprocess"])
def mesh(request: pytest.FixtureRequest, meshes: Meshes) -> Fleet:
    """The mesh in both auth modes: every test using it runs once per mode."""
    return meshes.get(request.param)


@pytest.fixture
def sidecar_mesh(meshes: Meshes) -> Fleet:
    """The mesh in the pods' shape: every request goes through the service's sidecar."""
    return meshes.get("sidecar")
