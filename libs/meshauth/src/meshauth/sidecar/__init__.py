"""The meshauth sidecar: a reverse proxy that verifies tokens in front of the app.

Importing this package does not import Django.
"""

from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth.sidecar.metrics import SidecarMetrics
from meshauth.sidecar.proxy import METRICS_PATH, Sidecar, create_server

__all__ = ["METRICS_PATH", "ConfigError", "Sidecar", "SidecarConfig", "SidecarMetrics", "create_server"]
