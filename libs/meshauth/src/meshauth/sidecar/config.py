"""The sidecar's configuration, from the environment only (the sidecar image has no Django)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from meshauth.keys import ALGORITHMS
from meshauth.verifier import MAX_LEEWAY, MAX_TOKEN_BYTES

__all__ = ["ConfigError", "SidecarConfig", "env", "env_number"]


class ConfigError(Exception):
    """A missing or invalid environment variable; the message names it."""


def env(name: str, default: str | None = None) -> str:
    """``os.environ[name]``, or ``default``; with no default the variable is required."""
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"Set the environment variable {name}.")
        return default
    return value


def env_number(name: str, default: str) -> float:
    """A non-negative number from ``os.environ[name]`` (or ``default``)."""
    raw = env(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number.") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative.")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _host_port(name: str, raw: str) -> tuple[str, int]:
    if raw.startswith("fd://"):
        # A listening socket inherited from a supervisor (as gunicorn's ``fd://``); port is unused.
        return raw, 0
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{name}={raw!r} must be host:port.")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the sidecar is the pod's front door


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the sidecar reads; see the README for each variable."""

    listen_host: str
    listen_port: int
    upstream: str
    public_paths: tuple[str, ...]
    issuer: str
    audience: tuple[str, ...]
    jwks_url: str
    principal_secret: str
    algorithms: tuple[str, ...] = ALGORITHMS
    leeway: float = 30.0
    max_token_bytes: int = MAX_TOKEN_BYTES
    max_header_bytes: int = 32_768
    max_body_bytes: int = 10_485_760
    jwks_ttl: float = 300.0
    jwks_min_refresh_interval: float = 30.0
    jwks_max_staleness: float = 86_400.0
    http_timeout: float = 2.0
    jwks_cache_file: str = ""
    upstream_timeout: float = 60.0
    upstream_connections: int = 100
    shutdown_timeout: float = 15.0

    @property
    def listen_fd(self) -> int | None:
        """The inherited socket's descriptor when ``MESHAUTH_SIDECAR_LISTEN`` is ``fd://N``."""
        if not self.listen_host.startswith("fd://"):
            return None
        return int(self.listen_host.removeprefix("fd://"))

    @classmethod
    def from_env(cls) -> SidecarConfig:
        """Read and validate the environment; raises :class:`ConfigError`."""
        listen_host, listen_port = _host_port(
            "MESHAUTH_SIDECAR_LISTEN", env("MESHAUTH_SIDECAR_LISTEN", "0.0.0.0:8000")
        )
        if listen_host.startswith("fd://") and not listen_host.removeprefix("fd://").isdigit():
            raise ConfigError(f"MESHAUTH_SIDECAR_LISTEN={listen_host!r} must be host:port or fd://N.")
        upstream = env("MESHAUTH_SIDECAR_UPSTREAM", "http://127.0.0.1:8080").rstrip("/")
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ConfigError(f"MESHAUTH_SIDECAR_UPSTREAM={upstream!r} must be http(s)://host:port.")
        config = cls(
            listen_host=listen_host,
            listen_port=listen_port,
            upstream=upstream,
            public_paths=_list(env("MESHAUTH_PUBLIC_PATHS", "/livez,/readyz,/metrics")),
            issuer=env("MESHAUTH_ISSUER"),
            audience=_list(env("MESHAUTH_AUDIENCE")),
            jwks_url=env("MESHAUTH_JWKS_URL"),
            principal_secret=_principal_secret(),
            algorithms=_list(env("MESHAUTH_ALGORITHMS", ",".join(ALGORITHMS))),
            leeway=env_number("MESHAUTH_LEEWAY", "30"),
            max_token_bytes=int(env_number("MESHAUTH_MAX_TOKEN_BYTES", "8192")),
            max_header_bytes=int(env_number("MESHAUTH_SIDECAR_MAX_HEADER_BYTES", "32768")),
            max_body_bytes=int(env_number("MESHAUTH_SIDECAR_MAX_BODY_BYTES", "10485760")),
            jwks_ttl=env_number("MESHAUTH_JWKS_TTL", "300"),
            jwks_min_refresh_interval=env_number("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL", "30"),
            jwks_max_staleness=env_number("MESHAUTH_JWKS_MAX_STALENESS", "86400"),
            jwks_cache_file=os.environ.get("MESHAUTH_JWKS_CACHE_FILE", ""),
            http_timeout=env_number("MESHAUTH_HTTP_TIMEOUT", "2"),
            upstream_timeout=env_number("MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT", "60"),
            upstream_connections=int(env_number("MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS", "100")),
            shutdown_timeout=env_number("MESHAUTH_SIDECAR_SHUTDOWN_TIMEOUT", "15"),
        )
        if not config.audience:
            raise ConfigError("Set the environment variable MESHAUTH_AUDIENCE.")
        if config.leeway > MAX_LEEWAY:
            raise ConfigError(f"MESHAUTH_LEEWAY must be at most {MAX_LEEWAY} seconds.")
        if any(not path.startswith("/") for path in config.public_paths):
            raise ConfigError("MESHAUTH_PUBLIC_PATHS entries must start with '/'.")
        return config


def _principal_secret() -> str:
    secret = env("MESHAUTH_PRINCIPAL_SECRET", "")
    if not secret:
        path = env("MESHAUTH_PRINCIPAL_SECRET_FILE", "")
        if not path:
            raise ConfigError("Set MESHAUTH_PRINCIPAL_SECRET or MESHAUTH_PRINCIPAL_SECRET_FILE.")
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"MESHAUTH_PRINCIPAL_SECRET_FILE={path!r} is unreadable: {exc}") from None
    if len(secret.encode()) < 16:
        raise ConfigError("The principal secret must be at least 16 bytes.")
    return secret
