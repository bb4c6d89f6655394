"""One service's facts as the templates' placeholders: mesh.toml's entry, and what follows from it.

Every rule that turns a registry fact into text lives here once (the client credentials of a service
that calls others, the JWKS URL of the token issuer, the skaffold modules a module needs), so a
template holds layout and prose only.
"""

from __future__ import annotations

import meshcontract
from mesh.registry import Service
from meshcontract import variable

__all__ = ["ISSUER", "service_context"]

# The service that signs every token; the others verify them against its JWKS (and so need it up).
ISSUER = "identity"
# The Secret key of the client secret is the variable's own name (the chart maps key to variable).
CLIENT_SECRET_KEY = variable("MESHAUTH_CLIENT_SECRET").name


def _yaml_list(items: tuple[str, ...], indent: int) -> str:
    """A block list continuing a ``key:`` line, or `` []`` for none."""
    pad = " " * indent
    return "".join(f"\n{pad}- {item}" for item in items) or " []"


def _requires(service: Service) -> str:
    """The skaffold modules besides the shared two: the issuer (unless it is the issuer) and its callees."""
    needed = [name for name in (ISSUER, *service.calls) if name != service.name]
    return "".join(f"\n  - configs: [{name}]" for name in dict.fromkeys(needed))


def service_context(service: Service) -> dict[str, str]:
    """The placeholders of the chart, workflow and skaffold module templates for ``service``."""
    issuer = service.name == ISSUER
    calls_others = bool(service.calls)
    return {
        "name": service.name,
        "port": str(service.port),
        "description": service.description or f"the {service.name} service.",
        "smoke_path": service.smoke_path,
        "reads_yaml": _yaml_list(service.reads, 4),
        "calls_yaml": _yaml_list(service.calls, 4),
        # The probes are public in every chart (the contract's paths), then mesh.toml's own.
        "public_paths_yaml": "".join(
            f"\n    - {path}" for path in (*meshcontract.PROBES, *service.public_paths)
        ),
        # The issuer's own sidecar reads the keys from the app beside it: through the Service it would
        # ask itself, and no token protects the JWKS anyway.
        "jwks_url": meshcontract.unix_http_url(meshcontract.UPSTREAM_SOCKET, meshcontract.JWKS_PATH)
        if issuer
        else '""',
        "jwks_note": (
            f". {ISSUER}'s own sidecar reads the keys from the app beside it (the app itself reads them "
            "from its database)"
            if issuer
            else ""
        ),
        # A service that calls others gets client credentials (identity issues it service tokens).
        "client_id": service.name if calls_others else '""',
        "client_secret_key": CLIENT_SECRET_KEY if calls_others else '""',
        "requires": _requires(service),
    }
