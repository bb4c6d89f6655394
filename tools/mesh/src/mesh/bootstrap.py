"""`mesh db bootstrap`: one database, one schema and one login role per service, read grants.

Idempotent: run it on every `make up` and before every test session. The same statements are
rendered into the cluster's bootstrap Job (`mesh db sql`), so laptops and clusters cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2 import errors, sql

from mesh.registry import Registry, Service

__all__ = [
    "bootstrap",
    "bootstrap_statements",
    "create_database",
    "drop_database",
    "password_variable",
    "psql_script",
    "roles",
    "service_url",
]


def local_password(role: str) -> str:
    """The password of a role on a laptop's embedded server (loopback only, never a cluster's)."""
    return f"{role}-local-dev"


def service_url(admin_url: str, database: str, role: str, password: str | None = None) -> str:
    """The URL a service connects with: same server as ``admin_url``, its own role and database."""
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(role)}:{quote(password or local_password(role))}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def _with_database(admin_url: str, database: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def create_database(admin_url: str, database: str) -> bool:
    """Create ``database`` unless it exists; return True when it was created."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
            if cursor.fetchone():
                return False
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except errors.DuplicateDatabase:
                return False
            return True
    finally:
        conn.close()


def drop_database(admin_url: str, database: str) -> None:
    """Drop ``database``, disconnecting whoever still uses it."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    finally:
        conn.close()


def password_variable(role: str) -> str:
    """The environment variable the cluster's bootstrap Job reads a role's password from."""
    return f"ROLE_PASSWORD_{role.upper()}"


def roles(registry: Registry | Iterable[Service]) -> list[str]:
    """Every login role the fleet needs: one per service, plus a reader per service that reads."""
    services = sorted(registry, key=lambda s: s.name)
    return [s.role for s in services] + [s.reader_role for s in services if s.reads]


# A psql script names the database it runs in with psql's own variable, not a literal.
PSQL_DATABASE = sql.SQL(':"DBNAME"')


def _role_statements(role: str, password: str | None, psql: bool) -> Iterator[sql.Composable]:
    # CREATE ROLE has no IF NOT EXISTS; a DO block keeps the whole script idempotent.
    yield sql.SQL(
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
        "CREATE ROLE {role} LOGIN; END IF; END $$"
    ).format(name=sql.Literal(role), role=sql.Identifier(role))
    attributes = sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION").format(
        sql.Identifier(role)
    )
    if psql:
        # The password comes from the Job's environment (a Secret), never from the script.
        yield sql.SQL("\\getenv {}_password {}").format(sql.SQL(role), sql.SQL(password_variable(role)))
        yield sql.SQL("{} PASSWORD :'{}_password'").format(attributes, sql.SQL(role))
    elif password is not None:
        yield sql.SQL("{} PASSWORD {}").format(attributes, sql.Literal(password))
    else:
        yield attributes


def bootstrap_statements(
    registry: Registry | Iterable[Service],
    database: str | None,
    passwords: dict[str, str] | None = None,
) -> list[sql.Composable]:
    """Every statement, in order, that makes ``database`` ready for the fleet.

    ``passwords`` maps role names to passwords; a role without one keeps its current password.
    ``database=None`` renders the psql flavour the cluster Job runs: the database is psql's
    ``:"DBNAME"`` and passwords are read from the environment with ``\\getenv``.
    """
    psql = database is None
    services = sorted(registry, key=lambda s: s.name)
    db = PSQL_DATABASE if psql else sql.Identifier(str(database))
    statements: list[sql.Composable] = [
        # Nobody but owners creates objects in public; nobody connects without a grant.
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db),
    ]
    for service in services:
        for role in (service.role, *([service.reader_role] if service.reads else [])):
            statements.extend(_role_statements(role, (passwords or {}).get(role), psql))
            statements.append(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(role)))
        schema, owner_role = sql.Identifier(service.schema), sql.Identifier(service.role)
        statements += [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, owner_role),
            sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, owner_role),
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema),
            # Per database: one server may hold several meshes (tests, a second `mesh up`).
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(owner_role, db, schema),
        ]
    by_name = {service.name: service for service in services}
    for service in services:
        if not service.reads:
            continue
        reader = sql.Identifier(service.reader_role)
        read_schemas = [sql.Identifier(by_name[name].schema) for name in service.reads]
        statements += [
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                reader, db, sql.SQL(", ").join(read_schemas)
            ),
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET default_transaction_read_only = on").format(reader, db),
        ]
        for name in service.reads:
            owner = by_name[name]
            schema = sql.Identifier(owner.schema)
            statements += [
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reader),
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, reader),
                # Tables the owner creates in later migrations are readable too.
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}"
                ).format(sql.Identifier(owner.role), schema, reader),
            ]
    return statements


def bootstrap(
    admin_url: str,
    database: str,
    registry: Registry | Iterable[Service],
    passwords: dict[str, str] | None = None,
) -> None:
    """Create the database if needed and apply :func:`bootstrap_statements` in one transaction."""
    create_database(admin_url, database)
    conn = psycopg2.connect(_with_database(admin_url, database))
    try:
        with conn, conn.cursor() as cursor:
            # Roles are cluster-wide: serialise bootstraps of several databases on one server.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('mesh.bootstrap'))")
            for statement in bootstrap_statements(registry, database, passwords):
                cursor.execute(statement)
    finally:
        conn.close()


def local_passwords(registry: Registry | Iterable[Service]) -> dict[str, str]:
    """Passwords for every role on a laptop's embedded server."""
    roles: dict[str, str] = {}
    for service in registry:
        roles[service.role] = local_password(service.role)
        if service.reads:
            roles[service.reader_role] = local_password(service.reader_role)
    return roles


def psql_script(registry: Registry | Iterable[Service]) -> str:
    """The bootstrap as a psql script for the cluster Job: same statements, passwords from env."""
    lines = ["\\set ON_ERROR_STOP on"]
    for statement in bootstrap_statements(registry, None):
        text = _as_text(statement)
        lines.append(text if text.startswith("\\") else text + ";")
    return "\n".join(lines) + "\n"


def _as_text(statement: sql.Composable) -> str:
    # Composables need a connection to quote; identifiers and literals here are plain ASCII, so a
    # minimal quoting is exact for them.
    parts: list[str] = []
    for part in _flatten(statement):
        if isinstance(part, sql.Identifier):
            parts.append(".".join('"' + s.replace('"', '""') + '"' for s in part.strings))
        elif isinstance(part, sql.Literal):
            parts.append("'" + str(part.wrapped).replace("'", "''") + "'")
        elif isinstance(part, sql.SQL):
            parts.append(part.string)
        else:
            raise TypeError(f"cannot render {part!r}")
    return "".join(parts)


def _flatten(statement: sql.Composable) -> Iterator[sql.Composable]:
    if isinstance(statement, sql.Composed):
        for part in statement.seq:
            yield from _flatten(part)
    else:
        yield statement
