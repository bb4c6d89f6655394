"""meshauth's settings: one reader, one validation and one verifier factory for the Django app and
the sidecar alike.

Every field names the runtime-contract variable it holds (:mod:`meshcontract`): the variable's type
says how a value is read and its declared default is the default, so a default changed there is
changed here. Where the values come from is the caller's: :mod:`meshauth.django.conf` reads Django's
settings with the environment as fallback, :mod:`meshauth.sidecar.config` the environment only (the
sidecar image has no Django).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self, cast
from urllib.parse import urlsplit

from meshauth.jwks import JWKSCache, default_cache_file, http_client
from meshauth.metrics import AuthMetrics
from meshauth.verifier import MAX_LEEWAY, SUPPORTED_ALGORITHMS, Verifier
from meshcontract import SIDECAR_ENGINES, variable

__all__ = [
    "MODES",
    "UNIX_PREFIX",
    "AppSettings",
    "AuthSettings",
    "Mode",
    "SettingsError",
    "SidecarSettings",
    "Source",
    "environ_source",
    "inherited_fd",
    "is_public",
]

Mode = Literal["inprocess", "sidecar", "introspect"]
# `introspect` is the talk's per-request call to identity: the benchmark's anchor, not a default.
MODES: Final = ("inprocess", "sidecar", "introspect")
#: ``MESHAUTH_SIDECAR_UPSTREAM`` starting with this names the app's unix domain socket.
UNIX_PREFIX: Final = "unix:"
MIN_SECRET_BYTES: Final = 16

#: The value of a setting by name, ``None`` when it is not set. Strings are read as the environment
#: would give them; a Django setting may also be of the field's type already (a list, a number).
Source = Callable[[str], object]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A missing or invalid setting; the message is one line naming the variable."""


def environ_source(environ: Mapping[str, str] | None = None) -> Source:
    """Read settings from ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    return env.get


def is_public(path: str, public_paths: tuple[str, ...]) -> bool:
    """Whether the sidecar forwards ``path`` without a token: an entry ending in ``/`` is a prefix of
    whole segments, any other entry one exact path (the contract's rule for the probes)."""
    return any(path.startswith(p) if p.endswith("/") else path == p for p in public_paths)


def _from(name: str, parse: Callable[[str, Any], Any] | None = None) -> Any:
    """A field holding the contract variable ``name``, read by its declared type, then ``parse``d."""
    variable(name)  # a name the contract does not declare fails at import, not at the first request
    return dataclasses.field(metadata={"variable": name, "parse": parse})


def read(source: Source, name: str) -> Any:
    """The value of the contract variable ``name`` from ``source``, typed; its default when unset."""
    declared = variable(name)
    value = source(name)
    if value is None or value == "":
        value = declared.default
    if value is None:
        # No default: "unset" (a required value is checked by the validation, which knows the mode).
        return () if declared.kind == "list" else ""
    if declared.kind == "list":
        if isinstance(value, list | tuple):
            return tuple(str(item) for item in value)
        return tuple(item.strip() for item in str(value).split(",") if item.strip())
    if declared.kind in ("int", "float"):
        return _number(name, value, int if declared.kind == "int" else float)
    if not isinstance(value, str):
        raise SettingsError(f"{name} must be a string, not {type(value).__name__}.")
    return value


def _number(name: str, value: object, kind: type[int] | type[float]) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SettingsError(f"{name}={value!r} is not a number.")
    try:
        number = kind(value)
    except ValueError:
        whole = " whole" if kind is int else ""
        raise SettingsError(f"{name}={value!r} is not a{whole} number.") from None
    if number < 0:
        raise SettingsError(f"{name} must not be negative.")
    return number


def _principal_secret(source: Source) -> str:
    """``MESHAUTH_PRINCIPAL_SECRET``, or the content of ``MESHAUTH_PRINCIPAL_SECRET_FILE`` ("" if neither)."""
    secret: str = read(source, "MESHAUTH_PRINCIPAL_SECRET")
    path: str = read(source, "MESHAUTH_PRINCIPAL_SECRET_FILE")
    if secret or not path:
        return secret
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"MESHAUTH_PRINCIPAL_SECRET_FILE={path!r} is unreadable: {exc}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """What verifying tokens and principal headers needs: the part the app and the sidecar share."""

    issuer: str = _from("MESHAUTH_ISSUER")
    audience: tuple[str, ...] = _from("MESHAUTH_AUDIENCE")
    jwks_url: str = _from("MESHAUTH_JWKS_URL")
    jwks_cache_file: str = _from("MESHAUTH_JWKS_CACHE_FILE")
    algorithms: tuple[str, ...] = _from("MESHAUTH_ALGORITHMS")
    leeway: float = _from("MESHAUTH_LEEWAY")
    max_token_bytes: int = _from("MESHAUTH_MAX_TOKEN_BYTES")
    jwks_ttl: float = _from("MESHAUTH_JWKS_TTL")
    jwks_min_refresh_interval: float = _from("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL")
    jwks_max_staleness: float = _from("MESHAUTH_JWKS_MAX_STALENESS")
    http_timeout: float = _from("MESHAUTH_HTTP_TIMEOUT")
    # From MESHAUTH_PRINCIPAL_SECRET or MESHAUTH_PRINCIPAL_SECRET_FILE (read by load()).
    principal_secret: str = dataclasses.field(default="", repr=False)

    @classmethod
    def variables(cls) -> frozenset[str]:
        """The names of every contract variable these settings read."""
        declared = {f.metadata["variable"] for f in dataclasses.fields(cls) if "variable" in f.metadata}
        return frozenset({*declared, "MESHAUTH_PRINCIPAL_SECRET", "MESHAUTH_PRINCIPAL_SECRET_FILE"})

    @classmethod
    def load(cls, source: Source) -> Self:
        """Read every field from ``source`` and validate; raises :class:`SettingsError`."""
        values: dict[str, Any] = {"principal_secret": _principal_secret(source)}
        for field in dataclasses.fields(cls):
            name = field.metadata.get("variable")
            if name is None:
                continue
            value = read(source, name)
            parse = field.metadata["parse"]
            values[field.name] = parse(name, value) if parse else value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`SettingsError` on a combination no request could be served with."""
        if self.leeway > MAX_LEEWAY:
            raise SettingsError(f"MESHAUTH_LEEWAY must be between 0 and {MAX_LEEWAY} seconds.")
        if not self.algorithms or not set(self.algorithms) <= SUPPORTED_ALGORITHMS:
            raise SettingsError(
                f"MESHAUTH_ALGORITHMS must name some of {', '.join(sorted(SUPPORTED_ALGORITHMS))}, "
                f"not {','.join(self.algorithms)!r}."
            )

    def require_verification(self, why: str) -> None:
        """Verifying tokens needs an issuer, an audience and identity's keys."""
        for name, value in (
            ("MESHAUTH_ISSUER", self.issuer),
            ("MESHAUTH_AUDIENCE", self.audience),
            ("MESHAUTH_JWKS_URL", self.jwks_url),
        ):
            if not value:
                raise SettingsError(f"Set {name} ({why}).")
        try:
            http_client(self.jwks_url, timeout=1.0)[0].close()
        except ValueError as exc:
            raise SettingsError(f"MESHAUTH_JWKS_URL={exc}") from None

    def require_principal_secret(self, why: str) -> None:
        """Signing or trusting principal headers needs a secret of at least 16 bytes."""
        if len(self.principal_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"Set MESHAUTH_PRINCIPAL_SECRET or MESHAUTH_PRINCIPAL_SECRET_FILE "
                f"(at least {MIN_SECRET_BYTES} bytes; {why})."
            )

    def verifier(
        self, *, jwks: JWKSCache | None = None, metrics: AuthMetrics | None = None, mode: str = "inprocess"
    ) -> Verifier:
        """The token verifier these settings describe (the one factory, for the app and the sidecar).

        Without ``jwks`` it fetches ``jwks_url`` and keeps the last good key set in a file shared by
        the pod's processes: a worker born, or a sidecar restarted, while identity is down has keys.
        """
        return Verifier(
            issuer=self.issuer,
            audience=self.audience,
            jwks_url=self.jwks_url,
            jwks=jwks,
            algorithms=self.algorithms,
            leeway=self.leeway,
            max_token_bytes=self.max_token_bytes,
            jwks_ttl=self.jwks_ttl,
            jwks_min_refresh_interval=self.jwks_min_refresh_interval,
            jwks_max_staleness=self.jwks_max_staleness,
            http_timeout=self.http_timeout,
            jwks_cache_file=self.jwks_cache_file or default_cache_file(self.jwks_url),
            metrics=metrics,
            mode=mode,
        )


def _mode(name: str, value: str) -> Mode:
    if value not in MODES:
        raise SettingsError(f"{name} must be one of {MODES}, not {value!r}.")
    return cast(Mode, value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppSettings(AuthSettings):
    """The Django app's settings (:mod:`meshauth.django.conf` reads them)."""

    mode: Mode = _from("MESHAUTH_MODE", _mode)
    jwks_loader: str = _from("MESHAUTH_JWKS_LOADER")
    identity_url: str = _from("MESHAUTH_IDENTITY_URL", lambda _, url: url.rstrip("/"))
    principal_max_age: float = _from("MESHAUTH_PRINCIPAL_MAX_AGE")
    client_id: str = _from("MESHAUTH_CLIENT_ID")
    client_secret: str = _from("MESHAUTH_CLIENT_SECRET")
    token_cache_dir: str = _from("MESHAUTH_TOKEN_CACHE_DIR")
    profile_cache_seconds: float = _from("MESHAUTH_PROFILE_CACHE_SECONDS")

    def validate(self) -> None:
        super().validate()
        if self.mode == "inprocess":
            if self.jwks_loader and self.issuer and self.audience:
                return  # identity verifies its own tokens from its database: no URL to fetch
            self.require_verification("required in inprocess mode")
        elif self.mode == "introspect":
            if not (self.identity_url and self.client_id and self.client_secret):
                raise SettingsError(
                    "Set MESHAUTH_IDENTITY_URL, MESHAUTH_CLIENT_ID and MESHAUTH_CLIENT_SECRET "
                    "in introspect mode."
                )
        else:
            self.require_principal_secret("sidecar mode")


def _host_port(name: str, raw: str) -> tuple[str, int]:
    if raw.startswith("fd://"):
        # A listening socket inherited from a supervisor (as gunicorn's ``fd://``); port is unused.
        if not raw.removeprefix("fd://").isdigit():
            raise SettingsError(f"{name}={raw!r} must be host:port or fd://N.")
        return raw, 0
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit():
        raise SettingsError(f"{name}={raw!r} must be host:port or fd://N.")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the sidecar is the pod's front door


def _upstream(name: str, raw: str) -> str:
    if raw.startswith(UNIX_PREFIX):
        # A socket on a volume both containers mount: no TCP stack between sidecar and app.
        if not raw.removeprefix(UNIX_PREFIX).startswith("/"):
            raise SettingsError(f"{name}={raw!r} must be unix:/absolute/path.")
        return raw
    upstream = raw.rstrip("/")
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise SettingsError(f"{name}={upstream!r} must be http(s)://host:port or unix:/path.")
    return upstream


#: What may serve the sidecar's port (``MESHAUTH_SIDECAR_ENGINE``).
ENGINES: Final = SIDECAR_ENGINES


def _engine(name: str, raw: str) -> str:
    if raw not in ENGINES:
        raise SettingsError(f"{name}={raw!r} must be one of: {', '.join(ENGINES)}.")
    return raw


def _networks(name: str, items: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc} (a comma-separated list of addresses or CIDRs)") from None


def _paths(name: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    if any(not path.startswith("/") for path in paths):
        raise SettingsError(f"{name} entries must start with '/'.")
    return paths


def inherited_fd(listen: tuple[str, int]) -> int | None:
    """The descriptor of an inherited listening socket (a listen address ``fd://N``), else None."""
    host = listen[0]
    return int(host.removeprefix("fd://")) if host.startswith("fd://") else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SidecarSettings(AuthSettings):
    """The sidecar's settings (:mod:`meshauth.sidecar.config` reads them from the environment)."""

    engine: str = _from("MESHAUTH_SIDECAR_ENGINE", _engine)
    listen: tuple[str, int] = _from("MESHAUTH_SIDECAR_LISTEN", _host_port)
    metrics_listen: tuple[str, int] = _from("MESHAUTH_SIDECAR_METRICS_LISTEN", _host_port)
    upstream: str = _from("MESHAUTH_SIDECAR_UPSTREAM", _upstream)
    public_paths: tuple[str, ...] = _from("MESHAUTH_PUBLIC_PATHS", _paths)
    max_header_bytes: int = _from("MESHAUTH_SIDECAR_MAX_HEADER_BYTES")
    max_headers: int = _from("MESHAUTH_SIDECAR_MAX_HEADERS")
    max_url_bytes: int = _from("MESHAUTH_SIDECAR_MAX_URL_BYTES")
    max_body_bytes: int = _from("MESHAUTH_SIDECAR_MAX_BODY_BYTES")
    upstream_timeout: float = _from("MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT")
    # An app silent this long, and deaf to /livez, is stalled (meshauth.sidecar.stall); 0: never.
    stall_timeout: float = _from("MESHAUTH_SIDECAR_STALL_TIMEOUT")
    body_timeout: float = _from("MESHAUTH_SIDECAR_BODY_TIMEOUT")
    trusted_proxies: tuple[Network, ...] = _from("MESHAUTH_SIDECAR_TRUSTED_PROXIES", _networks)
    upstream_connections: int = _from("MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS")
    shutdown_timeout: float = _from("MESHAUTH_SIDECAR_SHUTDOWN_TIMEOUT")

    def validate(self) -> None:
        super().validate()
        self.require_verification("the sidecar verifies every token")
        self.require_principal_secret("the sidecar signs principal headers")
        if self.metrics_listen == self.listen:
            raise SettingsError("MESHAUTH_SIDECAR_METRICS_LISTEN must differ from MESHAUTH_SIDECAR_LISTEN.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read and validate the environment (``os.environ`` by default)."""
        return cls.load(environ_source(environ))

    def is_public(self, path: str) -> bool:
        """Whether ``path`` is forwarded without a token (:func:`is_public` on ``public_paths``)."""
        return is_public(path, self.public_paths)

    @property
    def upstream_socket(self) -> str:
        """The app's unix socket path (``unix:/path`` upstream), or ``""`` for a TCP upstream."""
        return self.upstream.removeprefix(UNIX_PREFIX) if self.upstream.startswith(UNIX_PREFIX) else ""
