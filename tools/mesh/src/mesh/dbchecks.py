"""`mesh db budget` and `mesh db lint-migrations`: the shared database's checks (docs/database.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mesh.local import admin_url, embedded_postgres
from mesh.registry import find_root, load_registry

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("budget", "lint-migrations")


def _say(message: str) -> None:
    print(f"[mesh] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    return cmd_budget(args) if args.db_command == "budget" else cmd_lint_migrations(args)


def cmd_budget(args: argparse.Namespace) -> int:
    """Print each scenario's connection budget; 1 when one does not fit, 2 on unusable input."""
    from mesh import budget

    registry = load_registry(find_root())
    limits = budget.limits_from_registry(registry)
    server = args.server or os.environ.get("DATABASE_ADMIN_URL")
    if server:
        try:
            limits = budget.limits_from_server(server, limits)
        except Exception as exc:  # noqa: BLE001 - any failure to ask the server falls back
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _say(f"db budget: server not reachable ({first}); using {limits.source}")
    given: dict[str, list[Path]] = {}
    for item in args.values:
        name, sep, path = item.partition("=")
        if not sep or name not in registry.services or not Path(path).is_file():
            _say(f"db budget: --values wants SERVICE=FILE with a known service and a file, got {item!r}")
            return 2
        given.setdefault(name, []).append(Path(path))
    known = budget.scenario_names(registry)
    unknown = [name for name in args.scenario if name not in known]
    if unknown:
        _say(f"db budget: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    runs: list[tuple[str, dict[str, list[Path]]]]
    if given:
        runs = [("given values", given)]
    else:
        runs = [(name, budget.scenario_files(registry, name)) for name in (args.scenario or known)]
    problems: list[str] = []
    try:
        with budget.chart_renderer(registry.root) as renderer:
            for scenario, files in runs:
                result = budget.compute(registry, renderer, scenario, files, limits)
                print(result.table() + "\n", flush=True)
                problems += result.problems()
    except budget.BudgetError as exc:
        _say(f"db budget: {exc}")
        return 2
    for problem in problems:
        _say(f"db budget: does not fit: {problem}")
    return 1 if problems else 0


def cmd_lint_migrations(args: argparse.Namespace) -> int:
    """squawk on every migration's SQL; 1 when one is refused (or an acceptance is stale)."""
    from mesh import migrations_lint

    registry = load_registry(find_root())
    unknown = set(args.only) - set(registry.services)
    if unknown:
        _say(f"db lint-migrations: unknown service(s): {', '.join(sorted(unknown))}")
        return 2
    url, started_db = admin_url(registry.root)
    try:
        refused, accepted, stale, checked = migrations_lint.lint(registry, url, only=args.only)
    except migrations_lint.LintError as exc:
        _say(f"db lint-migrations: {exc}")
        return 2
    finally:
        if started_db:
            embedded_postgres(registry.root).stop()
    for line in migrations_lint.report(refused, accepted, stale, checked):
        _say(f"db lint-migrations: {line}")
    return 1 if refused or stale else 0


def add_parsers(db_sub: Any) -> None:
    """Add the two commands to `mesh db`'s subparsers."""
    budget_parser = db_sub.add_parser(
        "budget",
        help="the fleet's worst-case connections per chart scenario against max_connections",
    )
    budget_parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="a ci/<NAME>-values.yaml scenario, or 'defaults' (default: every one)",
    )
    budget_parser.add_argument(
        "--values",
        action="append",
        default=[],
        metavar="SERVICE=FILE",
        help="values file(s) of one service, as `helm -f` (services without one use their defaults)",
    )
    budget_parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="read max_connections from this server (default: DATABASE_ADMIN_URL, else mesh.toml)",
    )
    lint_parser = db_sub.add_parser(
        "lint-migrations",
        help="check every service's migrations for rolling-deploy safety (squawk on sqlmigrate)",
    )
    lint_parser.add_argument("--only", nargs="*", default=[], metavar="NAME", help="lint only these services")
