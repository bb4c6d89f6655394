"""`mesh new-service NAME`: a service fully wired into the fleet, with no hand edit anywhere.

A service is its table in mesh.toml, what `mesh generate` writes from it (``charts/NAME``,
``.github/workflows/NAME.yml``, its skaffold module, the database bootstrap of ``k8s/``, dashboards
and rules), and its own code: ``services/NAME`` (Django project on meshkit, meshauth's middleware, an
items app with its migration, tests with real tokens), written once from ``mesh/templates/service``.
It also adds the package to the uv workspace (re-locked). The image needs no file of its own: the
repository's Dockerfile builds any service (``--target service --build-arg SERVICE=NAME``).

Every input is checked and every file computed before the first write; the files are then written
all or nothing (:mod:`mesh.scaffold.transaction`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mesh.registry import load_registry
from mesh.scaffold.names import UsageError, check_name, check_port, check_reads, next_port
from mesh.scaffold.plan import PlanError, ServiceSpec, plan
from mesh.scaffold.transaction import ConcurrentEdit, write_all_or_nothing

__all__ = ["ConcurrentEdit", "PlanError", "ServiceSpec", "UsageError", "new_service", "prepare"]


def prepare(root: Path, name: str, port: int | None = None, reads: Iterable[str] = ()) -> ServiceSpec:
    """Check the request against the fleet; raise :class:`UsageError` with a one-line reason."""
    registry = load_registry(root)
    check_name(name, registry)
    if port is None:
        port = next_port(registry)
    else:
        check_port(port, registry)
    return ServiceSpec(name=name, port=port, reads=check_reads(reads, registry))


def new_service(root: Path, name: str, port: int | None = None, reads: Iterable[str] = ()) -> list[Path]:
    """Create the service; return the files written, relative to ``root``."""
    spec = prepare(root, name, port, reads)
    changes = plan(root, load_registry(root), spec)
    return write_all_or_nothing(root, changes)
