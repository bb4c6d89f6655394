"""`mesh db lint-migrations`: squawk on every migration's `sqlmigrate` output. The fleet's migrations
pass (with the reasoned acceptances of migration-lint.toml); an unsafe one is refused by name and rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.migrations_lint import LintError, load_allow_list, squawk_binary
from mesh.registry import find_root
from mesh.testing import tool_missing

ROOT = find_root(Path(__file__).parent)

UNSAFE = """
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("products", "0001_initial")]

    operations = [
        migrations.RenameField(model_name="product", old_name="name", new_name="title"),
        migrations.AddIndex(
            model_name="product", index=models.Index(fields=["price"], name="product_price_idx")
        ),
    ]
"""


def lint_migrations(root: Path, admin_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    if squawk_binary() is None:
        tool_missing("squawk is not installed (PyPI squawk-cli, dev group)")
    return subprocess.run(
        [sys.executable, "-m", "mesh", "db", "lint-migrations", *args],
        cwd=root,
        env={**os.environ, "MESH_ROOT": str(root), "DATABASE_ADMIN_URL": admin_url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_migration_of_the_fleet_is_safe_for_a_rolling_deploy(admin_url: str) -> None:
    result = lint_migrations(ROOT, admin_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 refused, " in result.stdout
    assert "0 stale acceptances" in result.stdout


def test_an_unsafe_migration_is_refused_with_its_name_and_rule(admin_url: str, tmp_path: Path) -> None:
    # A copy of the fleet's registry and of catalog, with a migration that breaks the running version.
    for name in ("mesh.toml", "migration-lint.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "services" / "catalog",
        tmp_path / "services" / "catalog",
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"),
    )
    migrations = tmp_path / "services/catalog/src/catalog/products/migrations"
    # The unsafe migration follows 0001: catalog's later migrations have no part in this test.
    for later in migrations.glob("0*.py"):
        if not later.name.startswith("0001_"):
            later.unlink()
    (migrations / "0002_rename_name_and_index_price.py").write_text(UNSAFE)
    with (tmp_path / "migration-lint.toml").open("a") as allow:
        allow.write(
            '\n[[accept]]\nmigration = "catalog products.0001_initial"\nrule = "ban-drop-column"\n'
            'reason = "an acceptance that matches nothing"\n'
        )

    result = lint_migrations(tmp_path, admin_url, "--only", "catalog")

    assert result.returncode == 1, result.stdout + result.stderr
    refused = [line for line in result.stdout.splitlines() if "refused: " in line]
    assert any(
        "catalog products.0002_rename_name_and_index_price: renaming-column:" in line
        and 'RENAME COLUMN "name" TO "title"' in line
        for line in refused
    ), result.stdout
    assert any(
        "catalog products.0002_rename_name_and_index_price: require-concurrent-index-creation:" in line
        and "product_price_idx" in line
        for line in refused
    ), result.stdout
    # 0001 stays clean; the acceptance that matches nothing is reported so the list cannot rot.
    assert not any("products.0001_initial" in line for line in refused)
    assert (
        "stale acceptance in migration-lint.toml: catalog products.0001_initial ban-drop-column"
        in result.stdout
    )
    assert "2 migrations checked with squawk: 2 refused" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[rules.renaming-column]\nreason = ""\n', "[rules.renaming-column] needs a reason"),
        (
            '[[accept]]\nmigration = "catalog products.0001_initial"\nrule = "x"\n',
            "#1 needs migration, rule and reason",
        ),
    ],
)
def test_an_acceptance_without_a_reason_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "migration-lint.toml"
    path.write_text(text)
    with pytest.raises(LintError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_allow_list(path)


def test_every_acceptance_of_the_repository_gives_its_reason() -> None:
    allowed = load_allow_list(ROOT / "migration-lint.toml")
    assert allowed.rules
    assert all(
        len(reason) > 40 for reason in [*allowed.rules.values(), *(a.reason for a in allowed.accepted)]
    )
