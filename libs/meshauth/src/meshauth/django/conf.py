"""meshauth's Django settings: one typed object (:class:`meshauth.settings.AppSettings`), read from
``django.conf.settings`` (``MESHAUTH_*``) with the same-named environment variable as fallback, rebuilt
when a test overrides a setting."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from meshauth.jwks import JWKSCache
from meshauth.settings import MODES, AppSettings, Mode, SettingsError
from meshauth.verifier import Verifier

__all__ = ["MODES", "MeshAuthSettings", "Mode", "get_settings", "get_verifier", "on_reset", "reset"]

#: The Django app's settings (the name this module has always exported).
MeshAuthSettings = AppSettings


def _setting_or_env(name: str) -> object:
    """``settings.<name>`` if defined (a string, or already of the field's type), else the environment."""
    if hasattr(settings, name):
        return getattr(settings, name)
    return os.environ.get(name)


def load() -> AppSettings:
    """Read and validate the settings now; raises ``ImproperlyConfigured`` naming what is wrong."""
    try:
        return AppSettings.load(_setting_or_env)
    except SettingsError as exc:
        raise ImproperlyConfigured(str(exc)) from None


_lock = threading.Lock()
_settings: AppSettings | None = None
_verifier: Verifier | None = None
_reset_hooks: list[Callable[[], None]] = []


def get_settings() -> AppSettings:
    """The current settings (read once, re-read after ``override_settings`` touches a MESHAUTH_ name)."""
    global _settings
    current = _settings
    if current is not None:
        return current
    with _lock:
        if _settings is None:
            _settings = load()
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
            _verifier = conf.verifier(jwks=_loader_cache(conf))
        return _verifier


def _loader_cache(conf: AppSettings) -> JWKSCache | None:
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
