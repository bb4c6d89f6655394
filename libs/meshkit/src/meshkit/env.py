"""Typed access to environment variables, failing early with one clear line.

:func:`setting` reads a variable of the runtime contract (:mod:`meshcontract`) by its declaration:
the declared type says how the value is read, the declared default is the default. The code names
the variable and nothing else about it, so a default changed in the contract is changed everywhere,
and a name the contract does not declare fails at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from django.core.exceptions import ImproperlyConfigured

from meshcontract import Kind, declaration

__all__ = [
    "BUILD_PLACEHOLDER",
    "REQUIRED",
    "as_bool",
    "as_list",
    "building",
    "local_dev",
    "setting",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()
"""Sentinel default: the variable must be set."""

BUILD_PLACEHOLDER: Final = "unset-at-image-build"
"""What a missing required variable reads as while the image is built (see :func:`building`)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def as_bool(value: str) -> bool:
    """Parse a boolean the way operators write them in manifests (`true`, `1`, `yes`, `on`)."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def as_list(value: str) -> list[str]:
    """Parse a comma-separated list, dropping empty items and surrounding spaces."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _get_env(name: str, default: Any, *, cast: Callable[[str], Any]) -> Any:
    """Read ``name`` from the environment and convert it with ``cast``.

    A missing variable returns ``default`` unchanged (it is not cast); with no default it raises
    ``ImproperlyConfigured`` naming the variable. A value ``cast`` cannot convert raises
    ``ImproperlyConfigured`` naming the variable and the reason, so a bad manifest fails at start
    with one readable line instead of a traceback deep inside a request.
    """
    raw = os.environ.get(name)
    if raw is None:
        if default is REQUIRED and building():
            return BUILD_PLACEHOLDER
        if default is REQUIRED:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    try:
        return cast(raw)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"Environment variable {name}={raw!r} is invalid: {exc}") from None


#: How a value of each declared type is read.
CASTS: Final[dict[Kind, Callable[[str], Any]]] = {
    "int": int,
    "float": float,
    "bool": as_bool,
    "list": as_list,
}

_UNSET: Final[Any] = object()


def setting(name: str, *, service: str | None = None, fallback: Any = _UNSET) -> Any:
    """Read the runtime-contract variable ``name``, cast by its declared type.

    Unset, it is its declared default (``local_default`` under ``MESH_LOCAL_DEV``, the
    ``service_defaults`` entry for ``service``), read like a set value. A variable declared without a
    default may be given a ``fallback`` the code works out (a CPU count, a path with the process id),
    returned unchanged; one with a declared default may not, so no default is written twice. With
    neither, a required variable raises ``ImproperlyConfigured`` naming it and any other reads as
    ``None``. A bad value raises ``ImproperlyConfigured`` naming the variable and the reason.
    """
    try:
        declared = declaration(name)
    except KeyError as exc:
        raise LookupError(f"{name} is read but not declared in the runtime contract (meshcontract)") from exc
    if fallback is not _UNSET and declared.default is not None:
        raise TypeError(f"{name} has a default in the runtime contract: pass no fallback")
    cast = CASTS.get(declared.kind, str)
    local = declared.local_default is not None and local_dev()
    default = declared.default_for(service, local=local)
    if default is not None:
        return _get_env(name, None, cast=cast) if name in os.environ else _cast(name, default, cast)
    if fallback is not _UNSET:
        return _get_env(name, fallback, cast=cast)
    return _get_env(name, REQUIRED if declared.required else None, cast=cast)


def _cast(name: str, raw: str, cast: Callable[[str], Any]) -> Any:
    try:
        return cast(raw)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"The contract's default {name}={raw!r} is invalid: {exc}") from None


def local_dev() -> bool:
    """True when running on a developer machine (`make up`, tests), never in a cluster."""
    result: bool = setting("MESH_LOCAL_DEV")
    return result


def building() -> bool:
    """True while an image is built (``MESHKIT_BUILD=1``, set for `collectstatic` only).

    Build steps import the settings but serve nothing and open no connection, so they must not need
    the runtime's configuration (database URLs, issuer, secrets): a required variable that is
    missing reads as :data:`BUILD_PLACEHOLDER` instead of failing. Never set it in a container.
    """
    result: bool = setting("MESHKIT_BUILD")
    return result
