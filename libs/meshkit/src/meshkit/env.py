"""Typed access to environment variables, failing early with one clear line."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

__all__ = ["BUILD_PLACEHOLDER", "REQUIRED", "as_bool", "as_list", "building", "get_env", "local_dev"]

T = TypeVar("T")


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


@overload
def get_env(name: str, default: Any = ..., *, cast: Callable[[str], T]) -> T: ...
@overload
def get_env(name: str, default: Any = ...) -> str: ...


def get_env(name: str, default: Any = REQUIRED, *, cast: Callable[[str], Any] = str) -> Any:
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


def local_dev() -> bool:
    """True when running on a developer machine (`make up`, tests), never in a cluster."""
    result: bool = get_env("MESH_LOCAL_DEV", default=False, cast=as_bool)
    return result


def building() -> bool:
    """True while an image is built (``MESHKIT_BUILD=1``, set for `collectstatic` only).

    Build steps import the settings but serve nothing and open no connection, so they must not need
    the runtime's configuration (database URLs, issuer, secrets): a required variable that is
    missing reads as :data:`BUILD_PLACEHOLDER` instead of failing. Never set it in a container.
    """
    result: bool = get_env("MESHKIT_BUILD", default=False, cast=as_bool)
    return result
