"""The sidecar's configuration: :class:`meshauth.settings.SidecarSettings`, from the environment only
(the sidecar image has no Django); ``SidecarConfig.from_env()`` reads and validates it."""

from __future__ import annotations

from meshauth.settings import UNIX_PREFIX, SettingsError, SidecarSettings

__all__ = ["UNIX_PREFIX", "ConfigError", "SidecarConfig"]

#: A missing or invalid environment variable; the message names it.
ConfigError = SettingsError
SidecarConfig = SidecarSettings
