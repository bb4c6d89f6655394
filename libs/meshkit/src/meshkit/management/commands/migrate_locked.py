"""``migrate`` under a PostgreSQL advisory lock: safe when several copies start at once.

A release runs this once (a Helm pre-upgrade hook), but a retried Job, a second release or a
developer may start another copy at the same moment. Only one migrates; the others wait on the
lock, then find nothing left to apply. ``lock_timeout`` bounds every wait, so a migration stuck
behind a long transaction fails loudly instead of queueing all traffic behind its ALTER TABLE.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections

from meshkit.database import pooler_mode


def lock_key(namespace: str) -> int:
    """A stable signed 64-bit advisory lock key for ``namespace`` (the database and schema)."""
    digest = hashlib.sha256(f"meshkit.migrate_locked:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Command(BaseCommand):
    help = "Run migrate while holding a PostgreSQL advisory lock, with lock_timeout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--wait",
            type=float,
            default=300.0,
            help="Seconds to wait for another copy to finish migrating (default 300).",
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=10.0,
            help="Seconds each DDL statement may wait for a table lock (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if pooler_mode() == "transaction":
            # The advisory lock belongs to a session; a transaction pooler would take it on one
            # server connection and run the migration (and the unlock) on others.
            raise CommandError(
                "migrate_locked needs a session, and DATABASE_POOLER=transaction says DATABASE_URL "
                "is a transaction pooler: run migrations with a direct DATABASE_URL (the chart's "
                "migration Job reads secrets.directDatabaseUrlKey when database.pooler.enabled)."
            )
        connection = connections[alias]
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database(), current_schema()")
            database, schema = cursor.fetchone()
        key = lock_key(f"{database}.{schema}")
        self.stdout.write(f"Waiting for the migration lock of {database}.{schema} ...")
        with connection.cursor() as cursor:
            try:
                cursor.execute("SET lock_timeout = %s", [f"{int(options['wait'] * 1000)}ms"])
                cursor.execute("SELECT pg_advisory_lock(%s)", [key])
            except OperationalError as exc:
                raise CommandError(
                    f"Another migration held the lock for more than {options['wait']} s: {exc}"
                ) from exc
            cursor.execute("SET lock_timeout = %s", [f"{int(options['lock_timeout'] * 1000)}ms"])
            # A schema change on a big table may rightly run longer than any request may;
            # lock_timeout, not statement_timeout, is what protects the live traffic here.
            cursor.execute("SET statement_timeout = 0")
        try:
            self.stdout.write("Lock acquired; migrating.")
            call_command(
                "migrate",
                database=alias,
                interactive=False,
                verbosity=options["verbosity"],
                stdout=self.stdout._out,
                stderr=self.stderr._out,
            )
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
                cursor.execute("RESET lock_timeout")
                cursor.execute("RESET statement_timeout")
