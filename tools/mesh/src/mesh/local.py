"""Where a laptop's mesh keeps its state: `.mesh/` at the repository root."""

from __future__ import annotations

import os
from pathlib import Path

from mesh.postgres import EmbeddedPostgres

__all__ = ["LOCAL_DATABASE", "admin_url", "embedded_postgres", "run_dir", "state_dir"]

LOCAL_DATABASE = "mesh"


def state_dir(root: Path) -> Path:
    """`.mesh/` at the root, or ``MESH_STATE_DIR`` (tests run a `mesh up` in a directory of their own)."""
    override = os.environ.get("MESH_STATE_DIR")
    return Path(override) if override else root / ".mesh"


def run_dir(root: Path, port_offset: int = 0) -> Path:
    """Logs, the lock and the control socket of one `mesh up`; a second mesh (offset) has its own."""
    return state_dir(root) / ("run" if port_offset == 0 else f"run-{port_offset}")


def embedded_postgres(root: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(state_dir(root) / "postgres")


def admin_url(root: Path, *, variable: str = "DATABASE_ADMIN_URL") -> tuple[str, bool]:
    """A superuser URL: from ``variable`` when set, else the embedded server (started if needed).

    Returns the URL and whether this call started the embedded server.
    """
    url = os.environ.get(variable)
    if url:
        return url, False
    server = embedded_postgres(root)
    started = server.start()
    return server.admin_url(), started
