"""Dashboards and alert rules of the mesh, generated from Python so every service gets them unedited.

    python -m mesh.observability generate   # write charts/<svc>/files/ and the overview
    python -m mesh.observability check      # fail when a committed file differs from the generator
    python -m mesh.observability render     # PNG previews from a real Prometheus (docs/dashboards/)

`mesh generate` (`make generate`) writes these files with every other generated file, from
:func:`expected_files`; the first two commands are the same for these files alone.
"""

from __future__ import annotations

from mesh.observability.dashboards import (
    dashboard_queries,
    generate_overview_dashboard,
    generate_service_dashboard,
)
from mesh.observability.files import expected_files, stale_files, write_all
from mesh.observability.rules import generate_service_rules
from mesh.observability.slo import DEFAULT_SLO, SLO

__all__ = [
    "DEFAULT_SLO",
    "SLO",
    "dashboard_queries",
    "expected_files",
    "generate_overview_dashboard",
    "generate_service_dashboard",
    "generate_service_rules",
    "stale_files",
    "write_all",
]
