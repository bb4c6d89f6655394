"""`mesh db lint-migrations`: every migration of every service, checked for rolling-deploy safety.

During a rolling deploy the old pods run against the new schema, so a migration must not rename or
drop what they use, rewrite a table under an exclusive lock, or build an index that blocks writes.
Each migration's SQL (what ``manage.py sqlmigrate`` prints, collected on a fresh database) goes
through squawk, a PostgreSQL migration linter. A finding fails the check unless
``migration-lint.toml`` accepts it, for every migration (``[rules.<rule>]``) or for one
(``[[accept]]``), each with its reason. An acceptance that no longer matches anything fails too,
so the list cannot rot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mesh.bootstrap import bootstrap, drop_database, local_passwords, service_url
from mesh.registry import Registry, Service
from meshcontract import read_database_url_variable

__all__ = ["ALLOW_LIST", "AllowList", "Finding", "LintError", "lint", "squawk_binary"]

ALLOW_LIST = "migration-lint.toml"


class LintError(Exception):
    """The check could not run (no squawk, a bad allow-list, a migration that does not load)."""


@dataclass(frozen=True)
class Finding:
    service: str
    migration: str  # "<app>.<name>", as `manage.py sqlmigrate <app> <name>` names it
    rule: str
    message: str
    statement: str

    def line(self) -> str:
        return f"{self.service} {self.migration}: {self.rule}: {self.message} [{self.statement}]"


@dataclass(frozen=True)
class Acceptance:
    migration: str  # "<service> <app>.<name>"
    rule: str
    reason: str


@dataclass(frozen=True)
class AllowList:
    rules: dict[str, str]  # rule -> reason, for every migration
    accepted: tuple[Acceptance, ...]

    def allows(self, finding: Finding) -> bool:
        if finding.rule in self.rules:
            return True
        key = f"{finding.service} {finding.migration}"
        return any(a.migration == key and a.rule == finding.rule for a in self.accepted)


def load_allow_list(path: Path) -> AllowList:
    """Read ``migration-lint.toml``; every entry must give a reason."""
    if not path.is_file():
        return AllowList(rules={}, accepted=())
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LintError(f"{path.name}: {exc}") from None
    rules: dict[str, str] = {}
    for rule, table in data.get("rules", {}).items():
        reason = str(table.get("reason", "")).strip() if isinstance(table, dict) else ""
        if not reason:
            raise LintError(f"{path.name}: [rules.{rule}] needs a reason")
        rules[rule] = reason
    accepted = []
    for index, entry in enumerate(data.get("accept", []), start=1):
        migration, rule = str(entry.get("migration", "")), str(entry.get("rule", ""))
        reason = str(entry.get("reason", "")).strip()
        if not (migration and rule and reason):
            raise LintError(f"{path.name}: [[accept]] #{index} needs migration, rule and reason")
        accepted.append(Acceptance(migration, rule, reason))
    return AllowList(rules=rules, accepted=tuple(accepted))


def squawk_binary() -> str | None:
    """squawk from the workspace's venv (PyPI `squawk-cli`), else from PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    return shutil.which("squawk")


def migration_sql(registry: Registry, service: Service, database_url: str) -> list[dict[str, str]]:
    """Every migration of ``service`` with its SQL, from a subprocess in the service's environment."""
    service_dir = registry.service_dir(service.name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MESHAUTH_"))},
        "DJANGO_SETTINGS_MODULE": service.settings_module,
        "MESH_LOCAL_DEV": "1",
        "DATABASE_URL": database_url,
        # The service's own source first: a copy of a service lints its own migrations.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(service_dir / "src"), os.environ.get("PYTHONPATH")])),
    }
    for owner in service.reads:
        env[read_database_url_variable(owner)] = database_url
    result = subprocess.run(  # noqa: S603 - this interpreter, a module of ours
        [sys.executable, "-m", "mesh.migration_sql", service.name],
        env=env,
        cwd=service_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise LintError(f"{service.name}: cannot collect the migrations' SQL: {last[0]}")
    migrations: list[dict[str, str]] = json.loads(result.stdout)
    return migrations


def run_squawk(files: dict[Path, tuple[str, str]], workdir: Path) -> list[Finding]:
    """squawk on each SQL file; ``files`` maps a file to its (service, migration)."""
    binary = squawk_binary()
    if binary is None:
        raise LintError("squawk is not installed (PyPI squawk-cli, in the dev group: make sync)")
    if not files:
        return []
    result = subprocess.run(  # noqa: S603 - the pinned squawk binary
        [binary, "--reporter", "json", *map(str, files)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise LintError(
            f"squawk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    findings = []
    by_name = {path.resolve(): owner for path, owner in files.items()}
    for item in json.loads(result.stdout):
        service, migration = by_name[Path(item["file"]).resolve()]
        lines = Path(item["file"]).read_text().splitlines()
        index = int(item.get("line", 0))
        statement = lines[index].strip() if 0 <= index < len(lines) else ""
        findings.append(Finding(service, migration, item["rule_name"], item["message"], statement[:120]))
    return findings


def lint(
    registry: Registry,
    admin_url: str,
    only: Iterable[str] = (),
    allow_list: Path | None = None,
) -> tuple[list[Finding], list[Finding], list[Acceptance], int]:
    """Lint every migration of the fleet (or of ``only``).

    Returns the refused findings, the accepted ones, the acceptances that matched nothing, and the
    number of migrations checked.
    """
    chosen = [s for s in registry if not only or s.name in set(only)]
    allowed = load_allow_list(allow_list or registry.root / ALLOW_LIST)
    database = f"lint_migrations_{uuid.uuid4().hex[:8]}"
    bootstrap(admin_url, database, list(registry), local_passwords(registry))
    try:
        with tempfile.TemporaryDirectory(prefix="mesh-lint-") as tmp:
            workdir = Path(tmp)
            files: dict[Path, tuple[str, str]] = {}
            for service in chosen:
                url = service_url(admin_url, database, service.role)
                for migration in migration_sql(registry, service, url):
                    name = f"{migration['app']}.{migration['name']}"
                    path = workdir / f"{service.name}__{name}.sql"
                    path.write_text(migration["sql"] + "\n")
                    files[path] = (service.name, name)
            findings = run_squawk(files, workdir)
    finally:
        drop_database(admin_url, database)
    refused = [f for f in findings if not allowed.allows(f)]
    accepted = [f for f in findings if allowed.allows(f)]
    linted = {service.name for service in chosen}
    stale = [
        a
        for a in allowed.accepted
        if a.migration.split(" ", 1)[0] in linted
        and not any(f"{f.service} {f.migration}" == a.migration and f.rule == a.rule for f in findings)
    ]
    return refused, accepted, stale, len(files)


def report(
    refused: Sequence[Finding], accepted: Sequence[Finding], stale: Sequence[Acceptance], checked: int
) -> list[str]:
    """The lines `mesh db lint-migrations` prints."""
    lines = [f"refused: {finding.line()}" for finding in refused]
    lines += [
        f"stale acceptance in {ALLOW_LIST}: {a.migration} {a.rule} matches no finding; remove it"
        for a in stale
    ]
    lines.append(
        f"{checked} migrations checked with squawk: {len(refused)} refused, {len(accepted)} accepted "
        f"({ALLOW_LIST}), {len(stale)} stale acceptances"
    )
    return lines
