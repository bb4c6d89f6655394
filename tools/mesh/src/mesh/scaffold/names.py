"""Which names and ports a new service may take.

A service's name is used verbatim as a Python package (one venv holds every workspace member, so
it must not shadow anything importable), a PostgreSQL schema and login role, a Helm chart and
release, a Kubernetes Service (a DNS-1035 label: lowercase letters, digits and '-', starting with a
letter), a skaffold module, a GitHub workflow file and an environment variable prefix
(``<NAME>_URL``). Lowercase letters and digits, starting with a letter, is what all of them accept
unquoted: '-' is no Python identifier and '_' is no DNS label. 2 to 31 characters leaves room for the
suffixes (``<name>_reader``, ``<name>-migrate-…``) under the 63-character limits of labels and roles.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import keyword
import re
import sys
from collections.abc import Iterable

from mesh.registry import APP_PORT_OFFSET, Registry

__all__ = ["NAME_PATTERN", "RESERVED", "UsageError", "check_name", "check_port", "check_reads", "next_port"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,30}$")

# Our own packages and directories, names that would mislead (test/tests collide with pytest's
# conventions), skaffold's module of cluster-level objects, and PostgreSQL's reserved role names.
RESERVED = frozenset(
    {
        "mesh",
        "meshkit",
        "meshauth",
        "django",
        "test",
        "tests",
        "services",
        "libs",
        "tools",
        "charts",
        "k8s",
        "docs",
        "dependencies",
        "public",
        "none",
        "postgres",
    }
)

LOWEST_PORT = 1024


class UsageError(ValueError):
    """The request is refused before anything is written (exit code 2)."""


def _installed(name: str) -> str | None:
    """What already answers to ``name`` in this environment: a module or a distribution."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return "a module of Python's standard library"
    try:
        if importlib.util.find_spec(name) is not None:
            return "an importable module in this environment"
    except (ImportError, ValueError):
        return "an importable module in this environment"
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return "an installed distribution"


def check_name(name: str, registry: Registry) -> None:
    """Raise :class:`UsageError` with a one-line reason unless ``name`` may become a new service."""
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"{name!r} is not a valid service name: use 2-31 lowercase letters and digits, starting with "
            "a letter (it becomes a Python package, a PostgreSQL schema and a DNS label)"
        )
    if name in registry.services:
        raise UsageError(f"service {name!r} already exists in mesh.toml")
    if name in RESERVED or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise UsageError(f"{name!r} is a reserved name")
    taken = _installed(name)
    if taken:
        raise UsageError(f"{name!r} is {taken}: the service's package would shadow it")
    if any(s.schema == name or s.reader_role == name for s in registry):
        raise UsageError(f"{name!r} is already a schema or role of the fleet")


def _owner_of(port: int, registry: Registry) -> str | None:
    for service in registry:
        if port in (service.port, service.app_port):
            return service.name
    return None


def check_port(port: int, registry: Registry) -> None:
    """The public port and its app port (``port + 1000`` under `make up`) must both be free."""
    highest = 65535 - APP_PORT_OFFSET
    if not LOWEST_PORT <= port <= highest:
        raise UsageError(f"port {port} is out of range: use {LOWEST_PORT}-{highest}")
    for candidate in (port, port + APP_PORT_OFFSET):
        owner = _owner_of(candidate, registry)
        if owner:
            raise UsageError(f"port {port} is taken: {candidate} belongs to {owner}")


def next_port(registry: Registry) -> int:
    """The first free port above the highest one of the fleet."""
    port = max((s.port for s in registry), default=8000) + 1
    while _owner_of(port, registry) or _owner_of(port + APP_PORT_OFFSET, registry):
        port += 1
    return port


def check_reads(reads: Iterable[str], registry: Registry) -> tuple[str, ...]:
    """``--reads`` values (repeated or comma-separated), each an existing service, deduplicated."""
    found: list[str] = []
    for value in reads:
        for owner in (part.strip() for part in value.split(",")):
            if not owner:
                continue
            if owner not in registry.services:
                known = ", ".join(sorted(registry.services))
                raise UsageError(f"--reads {owner!r}: no such service in mesh.toml (known: {known})")
            if owner not in found:
                found.append(owner)
    return tuple(found)
