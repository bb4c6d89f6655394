"""The sidecar's configuration, from the environment only (the sidecar image has no Django)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from meshauth.keys import ALGORITHMS
from meshauth.sidecar.target import MAX_TARGET_BYTES
from meshauth.verifier import MAX_LEEWAY, MAX_TOKEN_BYTES

__all__ = ["UNIX_PREFIX", "ConfigError", "SidecarConfig", "env", "env_number"]

#: ``MESHAUTH_SIDECAR_UPSTREAM`` starting with this names the app's unix domain socket.
UNIX_PREFIX = "unix:"


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


def _networks(name: str, raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _list(raw))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc} (a comma-separated list of addresses or CIDRs)") from None


def _host_port(name: str, raw: str, *, inherited: bool = False) -> tuple[str, int]:
    if inherited and raw.startswith("fd://"):
        # A listening socket inherited from a supervisor (as gunicorn's ``fd://``); port is unused.
        if not raw.removeprefix("fd://").isdigit():
            raise ConfigError(f"{name}={raw!r} must be host:port or fd://N.")
        return raw, 0
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{name}={raw!r} must be host:port{' or fd://N' if inherited else ''}.")
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
    max_headers: int = 100
    max_url_bytes: int = MAX_TARGET_BYTES
    max_body_bytes: int = 10_485_760
    jwks_ttl: float = 300.0
    jwks_min_refresh_interval: float = 30.0
    jwks_max_staleness: float = 86_400.0
    http_timeout: float = 2.0
    jwks_cache_file: str = ""
    upstream_timeout: float = 60.0
    # An app silent this long, and deaf to /livez, is stalled (meshauth.sidecar.stall); 0: never.
    stall_timeout: float = 10.0
    body_timeout: float = 30.0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    upstream_connections: int = 100
    shutdown_timeout: float = 15.0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the pod's IP
    metrics_port: int = 9091

    @property
    def upstream_socket(self) -> str:
        """The app's unix socket path (``unix:/path`` upstream), or ``""`` for a TCP upstream."""
        return self.upstream.removeprefix(UNIX_PREFIX) if self.upstream.startswith(UNIX_PREFIX) else ""

    @property
    def listen_fd(self) -> int | None:
        """The inherited socket's descriptor when ``MESHAUTH_SIDECAR_LISTEN`` is ``fd://N``."""
        return _fd(self.listen_host)

    @property
    def metrics_fd(self) -> int | None:
        """The inherited socket's descriptor when ``MESHAUTH_SIDECAR_METRICS_LISTEN`` is ``fd://N``."""
        return _fd(self.metrics_host)

    @classmethod
    def from_env(cls) -> SidecarConfig:
        """Read and validate the environment; raises :class:`ConfigError`."""
        listen_host, listen_port = _host_port(
            "MESHAUTH_SIDECAR_LISTEN", env("MESHAUTH_SIDECAR_LISTEN", "0.0.0.0:8000"), inherited=True
        )
        metrics_host, metrics_port = _host_port(
            "MESHAUTH_SIDECAR_METRICS_LISTEN",
            env("MESHAUTH_SIDECAR_METRICS_LISTEN", "0.0.0.0:9091"),
            inherited=True,
        )
        upstream = _upstream(env("MESHAUTH_SIDECAR_UPSTREAM", "http://127.0.0.1:8080"))
        config = cls(
            listen_host=listen_host,
            listen_port=listen_port,
            upstream=upstream,
            public_paths=_list(env("MESHAUTH_PUBLIC_PATHS", "/livez,/readyz")),
            issuer=env("MESHAUTH_ISSUER"),
            audience=_list(env("MESHAUTH_AUDIENCE")),
            jwks_url=env("MESHAUTH_JWKS_URL"),
            principal_secret=_principal_secret(),
            algorithms=_list(env("MESHAUTH_ALGORITHMS", ",".join(ALGORITHMS))),
            leeway=env_number("MESHAUTH_LEEWAY", "30"),
            max_token_bytes=int(env_number("MESHAUTH_MAX_TOKEN_BYTES", "8192")),
            max_header_bytes=int(env_number("MESHAUTH_SIDECAR_MAX_HEADER_BYTES", "32768")),
            max_headers=int(env_number("MESHAUTH_SIDECAR_MAX_HEADERS", "100")),
            max_url_bytes=int(env_number("MESHAUTH_SIDECAR_MAX_URL_BYTES", str(MAX_TARGET_BYTES))),
            max_body_bytes=int(env_number("MESHAUTH_SIDECAR_MAX_BODY_BYTES", "10485760")),
            jwks_ttl=env_number("MESHAUTH_JWKS_TTL", "300"),
            jwks_min_refresh_interval=env_number("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL", "30"),
            jwks_max_staleness=env_number("MESHAUTH_JWKS_MAX_STALENESS", "86400"),
            jwks_cache_file=os.environ.get("MESHAUTH_JWKS_CACHE_FILE", ""),
            http_timeout=env_number("MESHAUTH_HTTP_TIMEOUT", "2"),
            upstream_timeout=env_number("MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT", "60"),
            stall_timeout=env_number("MESHAUTH_SIDECAR_STALL_TIMEOUT", "10"),
            body_timeout=env_number("MESHAUTH_SIDECAR_BODY_TIMEOUT", "30"),
            trusted_proxies=_networks(
                "MESHAUTH_SIDECAR_TRUSTED_PROXIES", env("MESHAUTH_SIDECAR_TRUSTED_PROXIES", "")
            ),
            upstream_connections=int(env_number("MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS", "100")),
            shutdown_timeout=env_number("MESHAUTH_SIDECAR_SHUTDOWN_TIMEOUT", "15"),
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
        if not config.audience:
            raise ConfigError("Set the environment variable MESHAUTH_AUDIENCE.")
        if (config.metrics_host, config.metrics_port) == (config.listen_host, config.listen_port):
            raise ConfigError("MESHAUTH_SIDECAR_METRICS_LISTEN must differ from MESHAUTH_SIDECAR_LISTEN.")
        if config.leeway > MAX_LEEWAY:
            raise ConfigError(f"MESHAUTH_LEEWAY must be at most {MAX_LEEWAY} seconds.")
        if any(not path.startswith("/") for path in config.public_paths):
            raise ConfigError("MESHAUTH_PUBLIC_PATHS entries must start with '/'.")
        return config


def _fd(host: str) -> int | None:
    return int(host.removeprefix("fd://")) if host.startswith("fd://") else None


def _upstream(raw: str) -> str:
    if raw.startswith(UNIX_PREFIX):
        # A socket on a volume both containers mount: no TCP stack between sidecar and app.
        if not raw.removeprefix(UNIX_PREFIX).startswith("/"):
            raise ConfigError(f"MESHAUTH_SIDECAR_UPSTREAM={raw!r} must be unix:/absolute/path.")
        return raw
    upstream = raw.rstrip("/")
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ConfigError(
            f"MESHAUTH_SIDECAR_UPSTREAM={upstream!r} must be http(s)://host:port or unix:/path."
        )
    return upstream


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
