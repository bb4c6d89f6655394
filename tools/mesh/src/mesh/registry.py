"""The fleet registry, `mesh.toml`: every service, its port, its schema, whom it reads and calls."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from meshcontract import (
    LOCAL_APP_PORT_OFFSET,
    LOCAL_METRICS_PORT_OFFSET,
    LOCAL_SIDECAR_METRICS_PORT_OFFSET,
    reader_role,
)

__all__ = ["Registry", "Service", "find_root", "load_registry"]

REGISTRY_FILE = "mesh.toml"
# `make up`: the app behind its sidecar, and the internal listeners (the app's /metrics and admin, the
# sidecar's metrics), at the contract's offsets from the public port.
APP_PORT_OFFSET = LOCAL_APP_PORT_OFFSET
METRICS_PORT_OFFSET = LOCAL_METRICS_PORT_OFFSET
SIDECAR_METRICS_PORT_OFFSET = LOCAL_SIDECAR_METRICS_PORT_OFFSET
# A new service's protected endpoint (the scaffolder's items API), when mesh.toml names none.
DEFAULT_SMOKE_PATH = "/api/v1/items"


@dataclass(frozen=True)
class Service:
    """One service of the fleet as `mesh.toml` declares it."""

    name: str
    port: int
    schema: str
    reads: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()
    # Path prefixes the sidecar forwards without a token, besides the probes and the API docs.
    public_paths: tuple[str, ...] = field(default=())
    # What the service does, in a phrase (its chart's description).
    description: str = ""
    # A protected endpoint the deploy's smoke test calls with a user's token.
    smoke_path: str = DEFAULT_SMOKE_PATH

    @property
    def app_port(self) -> int:
        return self.port + APP_PORT_OFFSET

    @property
    def metrics_port(self) -> int:
        return self.port + METRICS_PORT_OFFSET

    @property
    def sidecar_metrics_port(self) -> int:
        return self.port + SIDECAR_METRICS_PORT_OFFSET

    @property
    def role(self) -> str:
        """The login role that owns the service's schema."""
        return self.name

    @property
    def reader_role(self) -> str:
        """The login role limited to SELECT on the schemas in ``reads`` (the runtime contract's name)."""
        return reader_role(self.name)

    @property
    def settings_module(self) -> str:
        return f"{self.name}.settings"


@dataclass(frozen=True)
class Registry:
    root: Path
    services: dict[str, Service]

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services.values())

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def service_dir(self, name: str) -> Path:
        return self.root / "services" / name


def find_root(start: Path | None = None) -> Path:
    """The repository root: ``MESH_ROOT``, or the nearest directory upwards holding `mesh.toml`."""
    if os.environ.get("MESH_ROOT"):
        return Path(os.environ["MESH_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / REGISTRY_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"No {REGISTRY_FILE} found in {here} or any parent directory.")


def load_registry(root: Path | None = None) -> Registry:
    """Read and check `mesh.toml`: unique ports and schemas, reads and calls name known services."""
    root = root or find_root()
    data = tomllib.loads((root / REGISTRY_FILE).read_text())
    services: dict[str, Service] = {}
    for name, table in data.get("services", {}).items():
        services[name] = Service(
            name=name,
            port=int(table["port"]),
            schema=str(table.get("schema", name)),
            reads=tuple(table.get("reads", ())),
            calls=tuple(table.get("calls", ())),
            public_paths=tuple(table.get("public_paths", ())),
            description=str(table.get("description", "")),
            smoke_path=str(table.get("smoke_path", DEFAULT_SMOKE_PATH)),
        )
    _check(services)
    return Registry(root=root, services=services)


def _check(services: dict[str, Service]) -> None:
    ports = [s.port for s in services.values()]
    if len(set(ports)) != len(ports):
        raise ValueError("mesh.toml: two services share a port.")
    schemas = [s.schema for s in services.values()]
    if len(set(schemas)) != len(schemas):
        raise ValueError("mesh.toml: two services share a schema.")
    for service in services.values():
        for path in (*service.public_paths, service.smoke_path):
            if not path.startswith("/"):
                raise ValueError(f"mesh.toml: {service.name}: path {path!r} does not start with '/'.")
        for other in (*service.reads, *service.calls):
            if other not in services:
                raise ValueError(f"mesh.toml: {service.name} names unknown service {other!r}.")
