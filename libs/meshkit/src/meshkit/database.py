"""Django database settings from `DATABASE_URL`, shaped for a shared PostgreSQL behind a pooler."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from meshkit.env import BUILD_PLACEHOLDER, setting

__all__ = ["POOLER_MODES", "database_config", "parse_database_url", "pooler_mode"]

_SCHEMES = {"postgres", "postgresql", "postgis"}
#: ``DATABASE_POOLER``: empty (a direct connection), or the pool mode of the PgBouncer in between.
POOLER_MODES = ("", "session", "transaction")


def pooler_mode() -> str:
    """The pool mode of the pooler ``DATABASE_URL`` points at (``DATABASE_POOLER``), or ``""``."""
    mode = str(setting("DATABASE_POOLER")).strip().lower()
    if mode not in POOLER_MODES:
        raise ImproperlyConfigured(
            f"DATABASE_POOLER must be empty, 'session' or 'transaction', got {mode!r}."
        )
    return mode


def parse_database_url(url: str, *, variable: str = "DATABASE_URL") -> dict[str, Any]:
    """Split a ``postgres://user:password@host:port/name?opt=value`` URL into Django's keys."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ImproperlyConfigured(
            f"{variable} must start with postgres:// or postgresql://, got {parts.scheme or 'no'} scheme."
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(f"{variable} must name a database (postgres://.../NAME).")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{variable} has an invalid port.") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }


def database_config(
    schema: str, *, url_variable: str = "DATABASE_URL", url: str | None = None
) -> dict[str, Any]:
    """Return one ``DATABASES`` entry for a service whose tables live in ``schema``.

    The role's own default ``search_path`` (set by the bootstrap) already points at its schema; on a
    direct connection we set it on the connection too, so a role bootstrapped by hand cannot
    silently write to ``public``. Connection reuse fits a pooler: ``CONN_MAX_AGE`` with
    ``CONN_HEALTH_CHECKS``.

    Behind PgBouncer (``DATABASE_POOLER``) the ``options`` startup parameter is left out: PgBouncer
    refuses it, and the role's default ``search_path`` applies on every server connection anyway.
    In transaction mode each transaction may run on another server connection, so nothing may
    outlive one: server-side cursors (``DECLARE`` lives in a session) are off. psycopg2 never
    prepares statements on the server, so there is nothing to turn off there (psycopg 3 would
    need ``prepare_threshold=None`` below PgBouncer 1.21).
    """
    value = url or setting(url_variable)
    if value == BUILD_PLACEHOLDER:
        # An image build (collectstatic) opens no connection: an address nothing listens on.
        value = "postgres://build@127.0.0.1:1/build"
    config = parse_database_url(value, variable=url_variable)
    pooler = pooler_mode()
    options = config["OPTIONS"]
    options.setdefault("connect_timeout", setting("DATABASE_CONNECT_TIMEOUT"))
    if not pooler:
        # statement_timeout: a database that stops answering fails the request (a clean 503) well
        # within gunicorn's worker timeout, instead of the worker being killed mid-request. Behind
        # PgBouncer (no startup options) the pooler's own query_timeout has to play that part.
        statement_timeout = setting("DATABASE_STATEMENT_TIMEOUT")
        options["options"] = f"-c search_path={schema} -c statement_timeout={int(statement_timeout * 1000)}"
    options.setdefault("application_name", schema)
    config.update(
        CONN_MAX_AGE=setting("DATABASE_CONN_MAX_AGE"),
        CONN_HEALTH_CHECKS=setting("DATABASE_CONN_HEALTH_CHECKS"),
        DISABLE_SERVER_SIDE_CURSORS=pooler == "transaction"
        or setting("DATABASE_DISABLE_SERVER_SIDE_CURSORS"),
    )
    return config
