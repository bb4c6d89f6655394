"""The runtime contract: what a service's containers read from their environment, and the fixed
paths, ports, header names and naming rules between the platform and the code.

This package is the one declaration of those facts, with no dependencies so that both images import
it (the sidecar image has no Django). ``docs/runtime-contract.md``'s variable tables are generated from
it (``python -m meshcontract``; ``--check`` fails when the committed page differs), the chart tests
read it to decide which variables each container may be given and must be given, and the loaders read
their names, types and defaults from it: ``meshauth.settings`` (the Django app and the sidecar),
``meshkit`` (probes, request ids, metrics), ``mesh`` (roles and variables per ``mesh.toml`` entry).
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal, TypeGuard

__all__ = [
    "APP_PORT",
    "Kind",
    "JWKS_PATH",
    "LIVEZ",
    "LOCAL_APP_PORT_OFFSET",
    "LOCAL_METRICS_PORT_OFFSET",
    "LOCAL_SIDECAR_METRICS_PORT_OFFSET",
    "METRICS",
    "METRICS_PORT",
    "PRINCIPAL_HEADER",
    "PRINCIPAL_HEADERS",
    "PRINCIPAL_SIGNATURE_HEADER",
    "PRINCIPAL_TIMESTAMP_HEADER",
    "PROBES",
    "READYZ",
    "REQUEST_ID_HEADER",
    "SIDECAR_ENGINES",
    "REQUEST_ID_META",
    "REQUEST_ID_PATTERN",
    "SECTIONS",
    "SIDECAR_METRICS",
    "SIDECAR_METRICS_PORT",
    "QUIET_PATHS",
    "UNIX_HTTP_SCHEME",
    "UPSTREAM_SOCKET",
    "VARIABLES",
    "Reader",
    "Variable",
    "callee_url_variable",
    "declaration",
    "is_probe",
    "names",
    "read_database_url_variable",
    "reader_role",
    "unix_http_url",
    "render_ports",
    "render_tables",
    "valid_request_id",
    "variable",
]

# Paths every service answers whatever the Host header (the kubelet sends the pod IP).
LIVEZ: Final = "/livez"
READYZ: Final = "/readyz"
METRICS: Final = "/metrics"
JWKS_PATH: Final = "/.well-known/jwks.json"  # identity's public keys, where every verifier fetches them
SIDECAR_METRICS: Final = "/metrics/sidecar"  # the sidecar's own series, answered by the sidecar
PROBES: Final = (LIVEZ, READYZ)
# What may serve the auth sidecar's port (MESHAUTH_SIDECAR_ENGINE; the charts' auth.sidecar.engine).
SIDECAR_ENGINES: Final = ("python", "haproxy")
# The app's paths kept out of its access log and request metrics: probes every few seconds and
# Prometheus scrapes would drown every rate. (The sidecar's are the probes: it is scraped elsewhere.)
QUIET_PATHS: Final = frozenset({*PROBES, METRICS})


def is_probe(path: str) -> bool:
    """Whether ``path`` is a probe path. The one rule, in meshkit and in the sidecar: exact match.

    A probe is answered without looking at a token (the sidecar forwards it anonymously), without host
    validation, and unlogged. A prefix rule would extend all of that to whatever the app routes under
    ``/livez/`` or ``/readyz/`` (and to ``/livezX`` with a careless prefix); an exact rule extends it to
    nothing but the two paths that are answered.
    """
    return path in PROBES


# In a pod: the Service's `http` target (the sidecar, or gunicorn in-process), and gunicorn's unix
# socket behind the sidecar, on a memory-backed volume only the two containers mount (cheaper per
# request than loopback TCP: the README's Performance section).
APP_PORT: Final = 8000
UPSTREAM_SOCKET: Final = "/run/gunicorn/app.sock"
# A URL for an HTTP server on a unix socket (identity's sidecar reads the keys from the app beside it):
# the form of requests-unixsocket and docker-py, the socket's path percent-encoded as the host.
UNIX_HTTP_SCHEME: Final = "http+unix://"


def unix_http_url(socket_path: str, path: str) -> str:
    """``path`` of the HTTP server on ``socket_path``: ``http+unix://%2Frun%2F…%2Fapp.sock/path``."""
    return f"{UNIX_HTTP_SCHEME}{urllib.parse.quote(socket_path, safe='')}{path}"


# The internal listeners (never routed by the Ingress; only Prometheus may reach them): the app's
# `/metrics` and admin, and the sidecar's `/metrics/sidecar`.
METRICS_PORT: Final = 9090
SIDECAR_METRICS_PORT: Final = 9091
# `mesh up` on one machine: each service's sidecar listens on its `mesh.toml` port, its other listeners
# on 127.0.0.1 at these offsets from it (gunicorn's only with `mesh bench --upstream tcp`: the sidecar
# reaches it on a unix socket otherwise, as in a pod).
LOCAL_APP_PORT_OFFSET: Final = 1000
LOCAL_METRICS_PORT_OFFSET: Final = 2000
LOCAL_SIDECAR_METRICS_PORT_OFFSET: Final = 3000

REQUEST_ID_HEADER: Final = "X-Request-ID"
#: The same header as WSGI (Django's ``request.META``, gunicorn's environ) names it.
REQUEST_ID_META: Final = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
# A client's request id is passed on only when the whole value matches (short, log-safe: no newlines,
# nothing that breaks a JSON log line); otherwise a fresh one replaces it, at the sidecar and in the app
# alike, and the service client sends only such ids.
REQUEST_ID_PATTERN: Final = r"[A-Za-z0-9._:-]{1,128}"
_REQUEST_ID: Final = re.compile(REQUEST_ID_PATTERN)


def valid_request_id(value: str | None) -> TypeGuard[str]:
    """Whether ``value`` may be kept as a request id (the whole value matches the contract's pattern)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


# What the sidecar adds for the app after verifying a token (meshauth.headers signs them).
PRINCIPAL_HEADER: Final = "X-Mesh-Principal"
PRINCIPAL_TIMESTAMP_HEADER: Final = "X-Mesh-Principal-Timestamp"
PRINCIPAL_SIGNATURE_HEADER: Final = "X-Mesh-Principal-Signature"
PRINCIPAL_HEADERS: Final = (PRINCIPAL_HEADER, PRINCIPAL_TIMESTAMP_HEADER, PRINCIPAL_SIGNATURE_HEADER)


def _env_prefix(service: str) -> str:
    # Service names are lower-case letters and digits (mesh new-service); `-` would be no identifier.
    return service.upper().replace("-", "_")


def reader_role(service: str) -> str:
    """The PostgreSQL login role ``service`` reads other services' schemas as (SELECT only)."""
    return f"{service}_reader"


def read_database_url_variable(owner: str) -> str:
    """The variable holding the read-only URL for ``owner``'s schema: ``CATALOG_READ_DATABASE_URL``."""
    return variable("<OWNER>_READ_DATABASE_URL").named(owner)


def callee_url_variable(callee: str) -> str:
    """The variable holding the base URL of a service in ``calls``: ``CATALOG_URL``."""
    return variable("<CALLEE>_URL").named(callee)


class Reader(StrEnum):
    """A container (or command) that reads a variable."""

    APP = "app"  # the app container: gunicorn and Django
    MIGRATE = "migrate"  # the migration Job: `django-admin migrate_locked`, Django settings only
    SIDECAR = "sidecar"  # the meshauth sidecar container
    SEED = "seed"  # `django-admin seed_demo`, run by `mesh up` and the local pods


Kind = Literal["str", "int", "float", "bool", "list", "url", "address", "path", "secret", "json"]

APP, MIGRATE, SIDECAR, SEED = Reader.APP, Reader.MIGRATE, Reader.SIDECAR, Reader.SEED
SETTINGS = (APP, MIGRATE)  # read when Django's settings load, so by every django-admin command too


@dataclass(frozen=True)
class Variable:
    """One environment variable of the contract.

    ``default`` is the value the code uses when the variable is unset, written as it would be set;
    ``None`` when there is none, and then ``unset`` says what happens (a value the code works out, such
    as a path with the process id, is the one default that stays in the code). ``local_default``
    replaces ``default`` in local development (``MESH_LOCAL_DEV``); ``service_defaults`` replaces it
    for the named services (``(("identity", "identity,mesh"),)``). A ``name`` with ``<…>`` is a
    family, one variable per entry of ``mesh.toml`` (``<OWNER>_READ_DATABASE_URL``).
    """

    name: str
    kind: Kind
    readers: tuple[Reader, ...]
    description: str
    default: str | None = None
    unset: str = "unset"
    required: bool = False
    services: tuple[str, ...] = ()  # empty: every service
    section: str = "meshkit"
    local_default: str | None = None
    service_defaults: tuple[tuple[str, str], ...] = ()

    def default_for(self, service: str | None = None, *, local: bool = False) -> str | None:
        """The default that applies to ``service`` (any when None), in local development if ``local``."""
        if local and self.local_default is not None:
            return self.local_default
        return dict(self.service_defaults).get(service or "", self.default)

    @property
    def family(self) -> str | None:
        """``CALLEE`` or ``OWNER`` for a family of variables, None for one variable."""
        found = re.fullmatch(r"<([A-Z]+)>_.*", self.name)
        return found.group(1) if found else None

    def named(self, prefix: str) -> str:
        """The family member for one service name: ``<OWNER>_READ_DATABASE_URL`` -> ``CATALOG_READ_…``."""
        return re.sub(r"^<[A-Z]+>", _env_prefix(prefix), self.name)

    def applies_to(self, service: str) -> bool:
        return not self.services or service in self.services


def _v(
    name: str,
    kind: Kind,
    readers: Iterable[Reader],
    description: str,
    *,
    default: str | None = None,
    unset: str = "unset",
    required: bool = False,
    services: tuple[str, ...] = (),
    section: str = "meshkit",
    local_default: str | None = None,
    service_defaults: tuple[tuple[str, str], ...] = (),
) -> Variable:
    return Variable(
        name,
        kind,
        tuple(readers),
        description,
        default,
        unset,
        required,
        services,
        section,
        local_default,
        service_defaults,
    )


# (heading, intro) of each generated table, in the page's order.
SECTIONS: Final = {
    "meshkit": ("the app container (read by meshkit)", ""),
    "gunicorn": ("gunicorn (the app container, read by `meshkit.gunicorn`)", ""),
    "meshauth": (
        "meshauth (app container and sidecar)",
        "Read by `meshauth.settings` (`AppSettings` in the app, `SidecarSettings` in the sidecar) by these "
        "declarations: name, type and default; an empty value is unset.",
    ),
    "fleet": (
        "the fleet (from `mesh.toml`, set by the charts and `mesh up`)",
        "One variable per entry of the service's `calls` and `reads` in `mesh.toml`.",
    ),
    "identity": ("identity", ""),
    "catalog": ("catalog", ""),
    "orders": ("orders", ""),
    "local": ("local development and demo data", "Set by `mesh up`; never by the charts."),
}

VARIABLES: Final[tuple[Variable, ...]] = (
    # meshkit: Django settings shared by every service
    _v(
        "SECRET_KEY",
        "secret",
        SETTINGS,
        "Django secret key",
        unset="required (except local dev)",
        required=True,
    ),
    _v(
        "MESH_LOCAL_DEV",
        "bool",
        SETTINGS,
        "local development: allows a generated `SECRET_KEY`, localhost hosts",
        default="false",
    ),
    _v("DEBUG", "bool", SETTINGS, "Django debug", default="false"),
    _v("ALLOWED_HOSTS", "list", SETTINGS, "comma-separated", default=""),
    _v(
        "CSRF_TRUSTED_ORIGINS",
        "list",
        SETTINGS,
        "comma-separated origins for the admin behind an Ingress",
        default="",
    ),
    _v(
        "DJANGO_SETTINGS_MODULE",
        "str",
        SETTINGS,
        "the service's settings, `<service>.settings` (set by the image); gunicorn serves the `wsgi` "
        "module next to it when its command names no app",
        unset="unset: gunicorn needs the app on its command line",
    ),
    _v(
        "STATIC_ROOT",
        "path",
        SETTINGS,
        "where `collectstatic` writes (image builds); whitenoise serves it",
        unset="unset: static files from the installed apps",
    ),
    _v(
        "DATA_UPLOAD_MAX_MEMORY_SIZE",
        "int",
        SETTINGS,
        "largest request body in bytes; a bigger one is refused with 413 before anything reads it",
        default="1048576",
    ),
    _v(
        "LOG_LEVEL",
        "str",
        (APP, MIGRATE, SIDECAR),
        "root log level; logs are JSON lines on stdout",
        default="INFO",
    ),
    _v(
        "DATABASE_URL",
        "url",
        SETTINGS,
        "`postgres://user:password@host:port/dbname`",
        unset="required",
        required=True,
    ),
    _v(
        "DATABASE_CONN_MAX_AGE",
        "int",
        SETTINGS,
        "seconds a connection is kept (0 behind a transaction pooler)",
        default="60",
    ),
    _v(
        "DATABASE_CONN_HEALTH_CHECKS",
        "bool",
        SETTINGS,
        "check a kept connection before reuse",
        default="true",
    ),
    _v(
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS",
        "bool",
        SETTINGS,
        "`true` behind PgBouncer in transaction mode",
        default="false",
    ),
    _v(
        "DATABASE_POOLER",
        "str",
        SETTINGS,
        "`transaction` (or `session`) when `DATABASE_URL` is PgBouncer: no `options` startup parameter "
        "(the role's `search_path` applies), no server-side cursors in transaction mode, and "
        "`migrate_locked` refuses to run (the migration Job gets a direct `DATABASE_URL` instead); "
        "see [database.md](database.md)",
        default="",
    ),
    _v("DATABASE_CONNECT_TIMEOUT", "int", SETTINGS, "seconds", default="5"),
    _v(
        "DATABASE_STATEMENT_TIMEOUT",
        "float",
        SETTINGS,
        "seconds a statement may run (direct connections; below gunicorn's worker timeout, so a stuck query "
        "ends in a clean error instead of a killed worker); `migrate_locked` lifts it",
        default="15",
    ),
    _v("READYZ_TIMEOUT", "float", (APP,), "seconds the readiness database check may take", default="2"),
    _v(
        "PROMETHEUS_MULTIPROC_DIR",
        "path",
        (APP, MIGRATE),
        "metrics directory shared by gunicorn workers (a memory-backed emptyDir); read by prometheus_client, "
        "and management commands run without it",
        unset="unset",
    ),
    _v(
        "METRICS_BIND",
        "address",
        (APP,),
        "the internal listener (`0.0.0.0:9090` in a pod): `/metrics` only there, and the admin; unset, "
        "`/metrics` is served on any port",
        default="",
        unset="unset",
    ),
    _v(
        "DJANGO_ADMIN_PUBLIC",
        "bool",
        (APP,),
        "serve the admin on the public port too",
        default="false",
        local_default="true",
    ),
    _v(
        "SECURE_COOKIES",
        "bool",
        SETTINGS,
        "`SESSION_COOKIE_SECURE` and `CSRF_COOKIE_SECURE`",
        default="true",
        local_default="false",
    ),
    _v("SECURE_HSTS_SECONDS", "int", SETTINGS, "HSTS from Django (otherwise the ingress's job)", default="0"),
    _v(
        "MESHKIT_BUILD",
        "bool",
        SETTINGS,
        "image builds only (`collectstatic`): a missing required variable reads as a placeholder instead of "
        "failing; never set in a container",
        default="false",
    ),
    # gunicorn
    _v(
        "GUNICORN_BIND",
        "address",
        (APP,),
        "gunicorn listen address",
        default=f"0.0.0.0:{APP_PORT}",
        section="gunicorn",
    ),
    _v("GUNICORN_WORKERS", "int", (APP,), "worker processes", unset="from the CPU limit", section="gunicorn"),
    _v("GUNICORN_THREADS", "int", (APP,), "threads per worker", default="1", section="gunicorn"),
    _v("GUNICORN_TIMEOUT", "int", (APP,), "worker timeout, seconds", default="30", section="gunicorn"),
    _v(
        "GUNICORN_GRACEFUL_TIMEOUT",
        "int",
        (APP,),
        "seconds; keep below `terminationGracePeriodSeconds`",
        default="20",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_ACCESS_LOG",
        "bool",
        (APP,),
        "gunicorn's JSON access line per request; the charts and `make up` turn it off behind the auth "
        "sidecar, whose line (with the requests it refused) is the pod's access log",
        default="true",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_KEEPALIVE",
        "int",
        (APP,),
        "seconds an idle connection stays open (gthread workers, always: sync workers close every "
        "connection)",
        default="5",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_MAX_REQUESTS",
        "int",
        (APP,),
        "recycle a worker after this many requests (0 disables)",
        default="1000",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_MAX_REQUESTS_JITTER",
        "int",
        (APP,),
        "random extra requests so workers do not recycle together",
        default="100",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_LIMIT_REQUEST_FIELD_SIZE",
        "int",
        (APP,),
        "largest header gunicorn accepts; bigger than its 8 KiB default so meshauth answers an oversized "
        "token with its JSON 401",
        default="131072",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_FORWARDED_ALLOW_IPS",
        "list",
        (APP,),
        "peers whose `X-Forwarded-Proto` gunicorn believes (`request.is_secure()`): the sidecar, or "
        "in-process the ingress (`ingress.trustedProxies`)",
        default="127.0.0.1",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_LIMIT_REQUEST_FIELDS",
        "int",
        (APP,),
        "header fields gunicorn accepts: the sidecar's 100 plus what it adds",
        default="128",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_LIMIT_REQUEST_LINE",
        "int",
        (APP,),
        "longest request line gunicorn accepts (its maximum); above the sidecar's 4 KiB target limit, so "
        "behind a sidecar the client meets the sidecar's JSON 414",
        default="8190",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_CONTROL_SOCKET",
        "path",
        (APP,),
        "gunicorn's control socket (for `gunicornc`), one per master in the memory-backed `/tmp`; `off` "
        "turns it off",
        unset="`<tmp>/gunicorn-<master pid>.ctl`",
        section="gunicorn",
    ),
    _v(
        "GUNICORN_PROC_NAME",
        "str",
        (APP,),
        "process title (`mesh up` sets `mesh-<service>`)",
        default="meshkit",
        section="gunicorn",
    ),
    # meshauth: the Django side and the sidecar
    _v(
        "MESHAUTH_MODE",
        "str",
        SETTINGS,
        "`sidecar` (trust signed principal headers from the sidecar), `inprocess` (verify tokens in Django), "
        "or `introspect` (ask identity per request: the benchmark's anchor, not for production)",
        default="inprocess",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_ISSUER",
        "url",
        (*SETTINGS, SIDECAR),
        "the `iss` identity puts in tokens",
        unset="required",
        required=True,
        section="meshauth",
    ),
    _v(
        "MESHAUTH_AUDIENCE",
        "list",
        (*SETTINGS, SIDECAR),
        "comma list: this service's name (service tokens) and `mesh` (end users' tokens)",
        unset="required",
        required=True,
        section="meshauth",
        service_defaults=(("identity", "identity,mesh"),),
    ),
    _v(
        "MESHAUTH_JWKS_URL",
        "url",
        (*SETTINGS, SIDECAR),
        "identity's `/.well-known/jwks.json`; `http+unix://<socket, percent-encoded>/<path>` asks an app "
        "on a unix socket (identity's own sidecar)",
        unset="required (identity: its own keys, `MESHAUTH_JWKS_LOADER`)",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_JWKS_LOADER",
        "str",
        SETTINGS,
        "dotted path of a callable returning the JWKS, instead of fetching it (identity verifies its own "
        "tokens from its database)",
        default="",
        section="meshauth",
        service_defaults=(("identity", "identity.tokens.keys.jwks"),),
    ),
    _v(
        "MESHAUTH_IDENTITY_URL",
        "url",
        SETTINGS,
        "identity's base URL",
        default="",
        unset="required for profile lookups and service tokens",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_PRINCIPAL_SECRET",
        "secret",
        (*SETTINGS, SIDECAR),
        "per-pod secret the sidecar signs principal headers with (or `MESHAUTH_PRINCIPAL_SECRET_FILE`); in a "
        "pod, the `principal-secret` init container (`meshauth-principal-secret`, sidecar image) writes it "
        "into a memory-backed volume before either container starts",
        default="",
        unset="required in sidecar mode",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_PRINCIPAL_SECRET_FILE",
        "path",
        (*SETTINGS, SIDECAR),
        "a file holding that secret (what the charts set)",
        default="",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_PRINCIPAL_MAX_AGE",
        "float",
        SETTINGS,
        "seconds a signed principal stays valid for the app",
        default="30",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_CLIENT_ID",
        "str",
        SETTINGS,
        "service credentials for calls to other services",
        default="",
        section="meshauth",
    ),
    _v("MESHAUTH_CLIENT_SECRET", "secret", SETTINGS, "the client's secret", default="", section="meshauth"),
    _v(
        "MESHAUTH_TOKEN_CACHE_DIR",
        "path",
        SETTINGS,
        "a directory where the pod's processes share their service tokens (one 0600 file per audience): a "
        "worker started while identity is down uses its siblings' token; `mesh up` and the charts set it",
        default="",
        unset="each process keeps its own tokens in memory",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_ALGORITHMS",
        "list",
        (*SETTINGS, SIDECAR),
        "accepted signing algorithms",
        default="RS256,EdDSA",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_LEEWAY",
        "float",
        (*SETTINGS, SIDECAR),
        "seconds of clock skew allowed on `exp`/`nbf` (at most 60)",
        default="30",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_MAX_TOKEN_BYTES",
        "int",
        (*SETTINGS, SIDECAR),
        "longest token accepted (401 above it)",
        default="8192",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_JWKS_CACHE_FILE",
        "path",
        (*SETTINGS, SIDECAR),
        "the last good JWKS, shared by a pod's processes (a worker started while identity is down still "
        "verifies)",
        default="",
        unset="`<tmp>/meshauth-jwks-<hash of URL>.json`",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_JWKS_TTL",
        "float",
        (*SETTINGS, SIDECAR),
        "seconds between JWKS refreshes",
        default="300",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_JWKS_MIN_REFRESH_INTERVAL",
        "float",
        (*SETTINGS, SIDECAR),
        "rate limit of refetches for an unknown key, seconds (1 s while no key is known)",
        default="30",
        section="meshauth",
        # identity reads its keys from its own database: cheap, so a rotated key is seen within a second
        service_defaults=(("identity", "1"),),
    ),
    _v(
        "MESHAUTH_JWKS_MAX_STALENESS",
        "float",
        (*SETTINGS, SIDECAR),
        "how long keys outlive an unreachable identity, seconds",
        default="86400",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_HTTP_TIMEOUT",
        "float",
        (*SETTINGS, SIDECAR),
        "seconds for calls to identity",
        default="2",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_PROFILE_CACHE_SECONDS",
        "float",
        SETTINGS,
        "seconds a fetched profile is cached",
        default="30",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_ENGINE",
        "str",
        (SIDECAR,),
        "what serves the sidecar's port: `python` (its own HTTP server) or `haproxy` (HAProxy, configured "
        "and reloaded by the sidecar, the per-request work in C: a third less CPU per request)",
        default="python",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_LISTEN",
        "address",
        (SIDECAR,),
        "sidecar listen address, or `fd://N`: an inherited listening socket (`mesh up` uses it)",
        default=f"0.0.0.0:{APP_PORT}",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_UPSTREAM",
        "url",
        (SIDECAR,),
        "the app behind the sidecar: `unix:/path` (its socket), or `http://host:port`",
        default=f"unix:{UPSTREAM_SOCKET}",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_PUBLIC_PATHS",
        "list",
        (SIDECAR,),
        "paths the sidecar forwards without a token (and without `Authorization`): an entry ending in `/` "
        "is a prefix of whole segments, any other entry one exact path (the probes: exact, as in meshkit)",
        default=",".join(PROBES),
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_METRICS_LISTEN",
        "address",
        (SIDECAR,),
        "the sidecar's metrics listener (`/metrics/sidecar` only, or `fd://N`); must differ from the listen "
        "address",
        default=f"0.0.0.0:{SIDECAR_METRICS_PORT}",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_TRUSTED_PROXIES",
        "list",
        (SIDECAR,),
        "addresses/CIDRs (the ingress) whose `X-Forwarded-Proto` the sidecar passes on; anyone else's is "
        "replaced",
        default="",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_MAX_URL_BYTES",
        "int",
        (SIDECAR,),
        "longest request target (414 above it)",
        default="4096",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_MAX_HEADERS",
        "int",
        (SIDECAR,),
        "most header fields a request may have (431 above it)",
        default="100",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_BODY_TIMEOUT",
        "float",
        (SIDECAR,),
        "seconds a client may take to send its body (408 after it); the app is asked only once it is whole",
        default="30",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_MAX_HEADER_BYTES",
        "int",
        (SIDECAR,),
        "largest request head the sidecar reads",
        default="32768",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_MAX_BODY_BYTES",
        "int",
        (SIDECAR,),
        "largest request body the sidecar forwards",
        default="10485760",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_UPSTREAM_TIMEOUT",
        "float",
        (SIDECAR,),
        "seconds the app may take to answer",
        default="60",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_STALL_TIMEOUT",
        "float",
        (SIDECAR,),
        "seconds of silence (no /livez answer either) before the app counts as stalled: 504, then 503 "
        "at once; 0: off",
        default="10",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_UPSTREAM_CONNECTIONS",
        "int",
        (SIDECAR,),
        "connections the sidecar keeps to the app",
        default="100",
        section="meshauth",
    ),
    _v(
        "MESHAUTH_SIDECAR_SHUTDOWN_TIMEOUT",
        "float",
        (SIDECAR,),
        "seconds to drain on SIGTERM",
        default="15",
        section="meshauth",
    ),
    # the fleet, from mesh.toml
    _v(
        "<CALLEE>_URL",
        "url",
        SETTINGS,
        "base URL of each service in `calls` (e.g. orders' `CATALOG_URL`)",
        unset="required",
        required=True,
        section="fleet",
    ),
    _v(
        "<OWNER>_READ_DATABASE_URL",
        "url",
        SETTINGS,
        "a read-only role's URL for each service in `reads` (e.g. orders' `CATALOG_READ_DATABASE_URL`)",
        unset="required",
        required=True,
        section="fleet",
    ),
    # identity
    _v(
        "IDENTITY_ACCESS_TOKEN_TTL",
        "int",
        SETTINGS,
        "seconds an access token lives",
        default="600",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_SERVICE_TOKEN_TTL",
        "int",
        SETTINGS,
        "seconds a service token lives",
        default="600",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_REFRESH_TOKEN_TTL",
        "int",
        SETTINGS,
        "seconds a refresh token lives (rotated on every use)",
        default="1209600",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_USER_AUDIENCE",
        "str",
        SETTINGS,
        "`aud` of end users' tokens",
        default="mesh",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_SIGNING_ALGORITHM",
        "str",
        SETTINGS,
        "`RS256` (faster to verify, measured) or `EdDSA`",
        default="RS256",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_KEY_ENCRYPTION_KEY",
        "secret",
        SETTINGS,
        "Fernet key encrypting the signing keys at rest (from a Secret)",
        default="",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_KEY_ACTIVATION_DELAY",
        "int",
        SETTINGS,
        "seconds a rotated key is published before it signs",
        default="60",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_LOGIN_WINDOW",
        "int",
        SETTINGS,
        "seconds over which failed logins are counted",
        default="900",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_LOGIN_ACCOUNT_ATTEMPTS",
        "int",
        SETTINGS,
        "failed logins allowed per account in the window",
        default="5",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_LOGIN_ADDRESS_ATTEMPTS",
        "int",
        SETTINGS,
        "failed logins allowed per client address in the window",
        default="50",
        services=("identity",),
        section="identity",
    ),
    _v(
        "IDENTITY_TRUSTED_PROXY_HOPS",
        "int",
        SETTINGS,
        "X-Forwarded-For entries appended by proxies we run",
        unset="`1` in sidecar mode, else `0`",
        services=("identity",),
        section="identity",
    ),
    # catalog
    _v(
        "CATALOG_RESERVATION_TTL",
        "float",
        SETTINGS,
        "seconds a reservation holds stock; neither committed nor released by then, it is taken back at the "
        "next read or reservation",
        default="60",
        services=("catalog",),
        section="catalog",
    ),
    # orders
    _v(
        "CATALOG_TIMEOUT",
        "float",
        SETTINGS,
        "seconds a call to catalog may take",
        default="5",
        services=("orders",),
        section="orders",
    ),
    # local development
    _v(
        "MESH_ADMIN_PASSWORD",
        "secret",
        (SEED,),
        "the demo staff user's password",
        unset="`admin`",
        services=("identity",),
        section="local",
    ),
    _v(
        "MESH_SERVICE_CLIENTS",
        "json",
        (SEED,),
        '`{client_id: {"audiences": [...], "secret": ...}}`: the service clients `seed_demo` creates',
        default="",
        unset="none",
        services=("identity",),
        section="local",
    ),
)


def names(
    reader: Reader, service: str, *, calls: Iterable[str] = (), reads: Iterable[str] = ()
) -> dict[str, Variable]:
    """Every variable ``reader`` of ``service`` reads, by name, with the fleet's families spelled out for
    the services it ``calls`` and ``reads`` (its entry in mesh.toml)."""
    members = {"CALLEE": tuple(calls), "OWNER": tuple(reads)}
    found: dict[str, Variable] = {}
    for declared in VARIABLES:
        if reader not in declared.readers or not declared.applies_to(service):
            continue
        family = declared.family
        for name in [declared.named(m) for m in members[family]] if family else [declared.name]:
            found[name] = declared
    return found


def variable(name: str) -> Variable:
    """The declaration of one variable (not a family member), or KeyError."""
    for declared in VARIABLES:
        if declared.name == name:
            return declared
    raise KeyError(f"{name} is not in the runtime contract (meshcontract)")


def declaration(name: str) -> Variable:
    """The declaration of ``name``: the variable itself, or the family it is a member of
    (``CATALOG_READ_DATABASE_URL`` -> ``<OWNER>_READ_DATABASE_URL``); KeyError when neither."""
    try:
        return variable(name)
    except KeyError:
        pass
    for declared in VARIABLES:
        if declared.family and re.fullmatch(re.sub(r"^<[A-Z]+>", "[A-Z][A-Z0-9_]*", declared.name), name):
            return declared
    raise KeyError(f"{name} is not in the runtime contract (meshcontract)")


def _cell(found: Variable) -> str:
    if found.default is None:
        cell = found.unset
    elif found.default == "":
        cell = "empty" if found.unset == "unset" else found.unset
    else:
        cell = f"`{found.default}`"
    if found.local_default is not None:
        cell += f" (`{found.local_default}` in local dev)"
    for service, default in found.service_defaults:
        cell += f" ({service}: `{default}`)"
    return cell


SOURCE = "libs/meshcontract/src/meshcontract/__init__.py"
BEGIN = f"<!-- BEGIN generated by `python -m meshcontract`: edit {SOURCE} -->"
END = "<!-- END generated -->"


def render_tables() -> str:
    """The variable tables of docs/runtime-contract.md, between its BEGIN and END markers."""
    lines = [BEGIN]
    for section, (heading, intro) in SECTIONS.items():
        rows = [v for v in VARIABLES if v.section == section]
        lines += ["", f"## Environment: {heading}", ""]
        if intro:
            lines += [intro, ""]
        lines += ["| variable | type | default | read by | meaning |", "|---|---|---|---|---|"]
        for found in rows:
            readers = ", ".join(r.value for r in found.readers)
            if found.services:
                readers += f" ({', '.join(found.services)})"
            lines.append(
                f"| `{found.name}` | {found.kind} | {_cell(found)} | {readers} | {found.description} |"
            )
    lines += ["", END]
    return "\n".join(lines)


PORTS_BEGIN = f"<!-- BEGIN generated ports by `python -m meshcontract`: edit {SOURCE} -->"
PORTS_END = "<!-- END generated ports -->"


def render_ports() -> str:
    """The Ports table of docs/runtime-contract.md, between its ports markers. The local ports are the
    offsets only: each service's own port is mesh.toml's (the README's generated fleet table)."""
    sidecar, inprocess, local = "pod, sidecar mode", "pod, in-process mode", "`make up`"
    metrics = f"`port + {LOCAL_METRICS_PORT_OFFSET}`, `port + {LOCAL_SIDECAR_METRICS_PORT_OFFSET}`"
    rows = [
        (sidecar, f"`{APP_PORT}`", "the meshauth sidecar (the Service's `http` port); forwards to the app"),
        (
            sidecar,
            f"`unix:{UPSTREAM_SOCKET}`",
            "gunicorn, for the sidecar only (a memory volume no other container mounts)",
        ),
        (inprocess, f"`{APP_PORT}`", "gunicorn"),
        (
            "pod, both modes",
            f"`{METRICS_PORT}`",
            f"gunicorn's internal listener (`METRICS_BIND`): `{METRICS}`, the admin; the Service's `metrics` "
            "port, never the Ingress's",
        ),
        (
            sidecar,
            f"`{SIDECAR_METRICS_PORT}`",
            f"the sidecar's metrics listener: `{SIDECAR_METRICS}`; the Service's `sidecar-metrics` port",
        ),
        (local, "the service's `port` in `mesh.toml` (the README's fleet table)", "the sidecar"),
        (local, "`unix:.mesh/run/<service>/app.sock`", "gunicorn behind the sidecar"),
        (local, f"{metrics} on 127.0.0.1", "the app's and the sidecar's metrics listeners"),
    ]
    lines = [PORTS_BEGIN, "", "| where | port | who listens |", "|---|---|---|"]
    lines += [f"| {where} | {port} | {who} |" for where, port, who in rows]
    return "\n".join([*lines, "", PORTS_END])


def _replace(page: str, begin: str, end: str, text: str, what: str) -> str:
    start, stop = page.find(begin), page.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"the page has no BEGIN/END markers of the generated {what}")
    return page[:start] + text + page[stop + len(end) :]


def rewrite(page: str) -> str:
    """``page`` with the text between each pair of markers replaced: :func:`render_ports`,
    :func:`render_tables`."""
    page = _replace(page, BEGIN, END, render_tables(), "tables")
    return _replace(page, PORTS_BEGIN, PORTS_END, render_ports(), "ports")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshcontract", description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=Path("docs/runtime-contract.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not current")
    args = parser.parse_args(argv)
    try:
        page = args.page.read_text()
        current = rewrite(page)
    except (OSError, ValueError) as exc:
        print(f"meshcontract: {args.page}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if current != page:
            print(f"stale: {args.page} (run: python -m meshcontract)", file=sys.stderr)
            return 1
        return 0
    if current != page:
        args.page.write_text(current)
        print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
