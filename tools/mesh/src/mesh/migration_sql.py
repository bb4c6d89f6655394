"""Print the SQL of every migration of one service, as ``manage.py sqlmigrate`` does, as JSON.

Run inside the service's environment (``DJANGO_SETTINGS_MODULE``, a fresh ``DATABASE_URL``):
``python -m mesh.migration_sql <package>``. Migrations are taken in plan order; each one's SQL is
``sqlmigrate``'s output, and it is applied once its SQL is collected, so a later migration's SQL
is built against the schema it will meet (Django introspects the database for some operations).
Only the service's own apps (modules under ``<package>.``) are printed.
"""

from __future__ import annotations

import io
import json
import sys


def collect(package: str) -> list[dict[str, str]]:
    import django

    django.setup()
    from django.apps import apps
    from django.core.management import call_command
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    ours = {config.label for config in apps.get_app_configs() if config.name.startswith(f"{package}.")}
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes(), clean_start=True)
    found: list[dict[str, str]] = []
    for migration, _backwards in plan:
        if migration.app_label not in ours:
            continue
        out, err = io.StringIO(), io.StringIO()
        call_command("sqlmigrate", migration.app_label, migration.name, stdout=out, stderr=err)
        found.append({"app": migration.app_label, "name": migration.name, "sql": out.getvalue()})
        call_command("migrate", migration.app_label, migration.name, verbosity=0)
        executor.loader.build_graph()
    return found


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m mesh.migration_sql <service package>", file=sys.stderr)
        return 2
    json.dump(collect(sys.argv[1]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
