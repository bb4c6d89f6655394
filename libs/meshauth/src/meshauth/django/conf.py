"""meshauth's Django settings: one typed object, read from ``django.conf.settings`` (``MESHAUTH_*``)
with the same-named environment variable as fallback, rebuilt when a test overrides a setting."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from meshauth.headers import DEFAULT_MAX_AGE
from meshauth.jwks import JWKSCache, default_cache_file
from meshauth.keys import ALGORITHMS
from meshauth.verifier import MAX_LEEWAY, MAX_TOKEN_BYTES, Verifier

__all__ = ["MeshAuthSettings", "get_settings", "get_verifier", "setting_or_env"]

T = TypeVar("T")
Mode = Literal["inprocess", "sidecar", "introspect"]
# `introspect` is the talk's per-request call to identity: the benchmark's anchor, not a default.
MODES: Final = ("inprocess", "sidecar", "introspect")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def setting_or_env(name: str, default: T, cast_to: Callable[[str], T]) -> T:
    """``settings.<name>`` if defined, else ``os.environ[name]`` converted with ``cast_to``, else ``default``.

    A Django setting that is already of the right type is used as is; strings are converted the same
    way environment values are.
    """
    if hasattr(settings, name):
        value = getattr(settings, name)
        if isinstance(value, list | tuple) and cast_to is _list:
            return cast(T, tuple(str(v) for v in value))
        if not isinstance(value, str):
            return cast(T, value)
        raw = value
    elif name in os.environ:
        raw = os.environ[name]
    else:
        return default
    try:
        return cast_to(raw)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is invalid: {exc}") from None


@dataclass(frozen=True)
class MeshAuthSettings:
    """Every meshauth setting, validated. Names are the ``MESHAUTH_``-prefixed fields, upper-cased."""

    mode: Mode
    issuer: str
    audience: tuple[str, ...]
    jwks_url: str
    jwks_loader: str
    jwks_cache_file: str
    identity_url: str
    principal_secret: str
    principal_max_age: float
    client_id: str
    client_secret: str
    algorithms: tuple[str, ...]
    leeway: float
    max_token_bytes: int
    jwks_ttl: float
    jwks_min_refresh_interval: float
    jwks_max_staleness: float
    http_timeout: float
    profile_cache_seconds: float

    @classmethod
    def load(cls) -> MeshAuthSettings:
        """Read and validate the settings now; raises ``ImproperlyConfigured`` naming what is wrong."""
        mode = setting_or_env("MESHAUTH_MODE", "inprocess", str)
        if mode not in MODES:
            raise ImproperlyConfigured(f"MESHAUTH_MODE must be one of {MODES}, not {mode!r}.")
        conf = cls(
            mode=cast(Mode, mode),
            issuer=setting_or_env("MESHAUTH_ISSUER", "", str),
            audience=setting_or_env("MESHAUTH_AUDIENCE", (), _list),
            jwks_url=setting_or_env("MESHAUTH_JWKS_URL", "", str),
            jwks_loader=setting_or_env("MESHAUTH_JWKS_LOADER", "", str),
            jwks_cache_file=setting_or_env("MESHAUTH_JWKS_CACHE_FILE", "", str),
            identity_url=setting_or_env("MESHAUTH_IDENTITY_URL", "", str).rstrip("/"),
            principal_secret=_principal_secret(),
            principal_max_age=setting_or_env("MESHAUTH_PRINCIPAL_MAX_AGE", float(DEFAULT_MAX_AGE), float),
            client_id=setting_or_env("MESHAUTH_CLIENT_ID", "", str),
            client_secret=setting_or_env("MESHAUTH_CLIENT_SECRET", "", str),
            algorithms=setting_or_env("MESHAUTH_ALGORITHMS", ALGORITHMS, _list),
            leeway=setting_or_env("MESHAUTH_LEEWAY", 30.0, float),
            max_token_bytes=setting_or_env("MESHAUTH_MAX_TOKEN_BYTES", MAX_TOKEN_BYTES, int),
            jwks_ttl=setting_or_env("MESHAUTH_JWKS_TTL", 300.0, float),
            jwks_min_refresh_interval=setting_or_env("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL", 30.0, float),
            jwks_max_staleness=setting_or_env("MESHAUTH_JWKS_MAX_STALENESS", 86_400.0, float),
            http_timeout=setting_or_env("MESHAUTH_HTTP_TIMEOUT", 2.0, float),
            profile_cache_seconds=setting_or_env("MESHAUTH_PROFILE_CACHE_SECONDS", 30.0, float),
        )
        conf._validate()
        return conf

    def _validate(self) -> None:
        if self.mode == "inprocess":
            for name in ("issuer", "audience", "jwks_url"):
                if name == "jwks_url" and self.jwks_loader:
                    continue
                if not getattr(self, name):
                    raise ImproperlyConfigured(f"Set MESHAUTH_{name.upper()} (required in inprocess mode).")
        elif self.mode == "introspect":
            if not (self.identity_url and self.client_id and self.client_secret):
                raise ImproperlyConfigured(
                    "Set MESHAUTH_IDENTITY_URL, MESHAUTH_CLIENT_ID and MESHAUTH_CLIENT_SECRET "
                    "in introspect mode."
                )
        elif len(self.principal_secret.encode()) < 16:
            raise ImproperlyConfigured(
                "Set MESHAUTH_PRINCIPAL_SECRET or MESHAUTH_PRINCIPAL_SECRET_FILE (at least 16 bytes) "
                "in sidecar mode."
            )
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ImproperlyConfigured(f"MESHAUTH_LEEWAY must be between 0 and {MAX_LEEWAY} seconds.")


def _principal_secret() -> str:
    secret = setting_or_env("MESHAUTH_PRINCIPAL_SECRET", "", str)
    if secret:
        return secret
    path = setting_or_env("MESHAUTH_PRINCIPAL_SECRET_FILE", "", str)
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"MESHAUTH_PRINCIPAL_SECRET_FILE={path!r} is unreadable: {exc}") from None


_lock = threading.Lock()
_settings: MeshAuthSettings | None = None
_verifier: Verifier | None = None
_reset_hooks: list[Callable[[], None]] = []


def get_settings() -> MeshAuthSettings:
    """The current settings (read once, re-read after ``override_settings`` touches a MESHAUTH_ name)."""
    global _settings
    current = _settings
    if current is not None:
        return current
    with _lock:
        if _settings is None:
            _settings = MeshAuthSettings.load()
        return _settings


def get_verifier() -> Verifier:
    """The process's token verifier, built from the settings on first use."""
    global _verifier
    current = _verifier
    if current is not None:
        return current
    conf = get_settings()
    with _lock:
        if _verifier is None:
            _verifier = Verifier(
                issuer=conf.issuer,
                audience=conf.audience,
                jwks_url=conf.jwks_url,
                jwks=_loader_cache(conf),
                algorithms=conf.algorithms,
                leeway=conf.leeway,
                max_token_bytes=conf.max_token_bytes,
                jwks_ttl=conf.jwks_ttl,
                jwks_min_refresh_interval=conf.jwks_min_refresh_interval,
                jwks_max_staleness=conf.jwks_max_staleness,
                http_timeout=conf.http_timeout,
                # Shared by the pod's gunicorn workers: one born while identity is down has keys.
                jwks_cache_file=conf.jwks_cache_file or default_cache_file(conf.jwks_url),
            )
        return _verifier


def _loader_cache(conf: MeshAuthSettings) -> JWKSCache | None:
    """A JWKS cache fed by ``MESHAUTH_JWKS_LOADER`` (a dotted path to a callable), if one is set."""
    if not conf.jwks_loader:
        return None
    return JWKSCache(
        f"loader:{conf.jwks_loader}",
        loader=import_string(conf.jwks_loader),
        ttl=conf.jwks_ttl,
        min_refresh_interval=conf.jwks_min_refresh_interval,
        max_staleness=conf.jwks_max_staleness,
        algorithms=conf.algorithms,
    )


def on_reset(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever the settings are re-read (caches built from them must go)."""
    _reset_hooks.append(hook)


def reset() -> None:
    """Forget the settings and everything built from them."""
    global _settings, _verifier
    with _lock:
        old, _settings, _verifier = _verifier, None, None
    if old is not None:
        old.close()
    for hook in _reset_hooks:
        hook()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **_: Any) -> None:
    if setting.startswith("MESHAUTH_"):
        reset()
