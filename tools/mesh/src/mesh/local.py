"""Where a laptop's mesh keeps its state: `.mesh/` at the repository root."""

from __future__ import annotations

import os
from pathlib import Path

from mesh.postgres import EmbeddedPostgres

__all__ = ["LOCAL_DATABASE", "admin_url", "embedded_postgres", "state_dir"]

LOCAL_DATABASE = "mesh"


def state_dir(root: Path) -> Path:
    return root / ".mesh"


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
