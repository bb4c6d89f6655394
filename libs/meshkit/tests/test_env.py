"""Settings fail at start with one clear line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

import meshcontract as contract
from meshkit.database import database_config
from meshkit.env import as_bool, as_list, setting

HERE = Path(__file__).parent


def test_missing_required_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ImproperlyConfigured, match="^Set the environment variable DATABASE_URL.$"):
        setting("DATABASE_URL")


def test_a_family_member_is_required_like_its_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATALOG_READ_DATABASE_URL", raising=False)
    with pytest.raises(ImproperlyConfigured, match="^Set the environment variable CATALOG_READ_DATABASE_URL"):
        setting("CATALOG_READ_DATABASE_URL")


def test_bad_value_names_variable_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUNICORN_TIMEOUT", "many")
    with pytest.raises(ImproperlyConfigured, match="^Environment variable GUNICORN_TIMEOUT='many' is"):
        setting("GUNICORN_TIMEOUT")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("GUNICORN_TIMEOUT", 30), ("READYZ_TIMEOUT", 2.0), ("DEBUG", False), ("ALLOWED_HOSTS", [])],
)
def test_unset_is_the_contracts_default_read_by_its_type(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: object
) -> None:
    monkeypatch.delenv(name, raising=False)
    value = setting(name)
    assert (value, type(value)) == (expected, type(expected))


def test_a_set_value_is_read_by_the_declared_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, b.example")
    monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT", "2.5")
    assert setting("ALLOWED_HOSTS") == ["a.example", "b.example"]
    assert setting("DATABASE_STATEMENT_TIMEOUT") == 2.5


@pytest.mark.parametrize(("local", "expected"), [("0", True), ("1", False)])
def test_a_local_default_applies_in_local_dev(
    monkeypatch: pytest.MonkeyPatch, local: str, expected: bool
) -> None:
    monkeypatch.delenv("SECURE_COOKIES", raising=False)
    monkeypatch.setenv("MESH_LOCAL_DEV", local)
    assert setting("SECURE_COOKIES") is expected


def test_a_service_default_applies_to_that_service_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHAUTH_AUDIENCE", raising=False)
    assert setting("MESHAUTH_AUDIENCE", service="identity") == ["identity", "mesh"]
    assert setting("MESHAUTH_AUDIENCE", fallback="x") == "x"


def test_an_undeclared_name_is_refused() -> None:
    with pytest.raises(LookupError, match="^MESHKIT_TEST_VALUE is read but not declared in the runtime"):
        setting("MESHKIT_TEST_VALUE")


def test_code_may_not_restate_a_declared_default() -> None:
    with pytest.raises(TypeError, match="GUNICORN_TIMEOUT has a default in the runtime contract"):
        setting("GUNICORN_TIMEOUT", fallback=30)


def test_a_fallback_is_returned_uncast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    assert setting("GUNICORN_WORKERS", fallback=None) is None
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    assert setting("GUNICORN_WORKERS", fallback=None) == 3


def test_one_edit_of_a_default_in_the_contract_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code names the variable only: change the declared default and what meshkit reads follows."""
    monkeypatch.delenv("DATABASE_CONNECT_TIMEOUT", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://orders:pw@db.internal/mesh")
    before = contract.variable("DATABASE_CONNECT_TIMEOUT")
    assert database_config(schema="orders")["OPTIONS"]["connect_timeout"] == int(before.default or "")
    edited = contract.Variable(**{**before.__dict__, "default": "11"})
    declared = tuple(edited if v is before else v for v in contract.VARIABLES)
    monkeypatch.setattr(contract, "VARIABLES", declared)
    assert database_config(schema="orders")["OPTIONS"]["connect_timeout"] == 11


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("Yes", True), ("off", False)])
def test_booleans(raw: str, expected: bool) -> None:
    assert as_bool(raw) is expected


def test_bad_boolean_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        as_bool("maybe")


def test_lists_drop_blanks() -> None:
    assert as_list(" a.example.com, ,b.example.com ") == ["a.example.com", "b.example.com"]


def test_database_url_becomes_a_pooler_friendly_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://orders:s%3Acret@db.internal:6432/mesh?sslmode=require")
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
    monkeypatch.setenv("DATABASE_DISABLE_SERVER_SIDE_CURSORS", "true")
    config = database_config(schema="orders")
    assert config["NAME"] == "mesh"
    assert config["USER"] == "orders"
    assert config["PASSWORD"] == "s:cret"
    assert (config["HOST"], config["PORT"]) == ("db.internal", "6432")
    assert config["OPTIONS"]["sslmode"] == "require"
    assert config["OPTIONS"]["options"] == "-c search_path=orders -c statement_timeout=15000"
    assert config["CONN_MAX_AGE"] == 0
    assert config["CONN_HEALTH_CHECKS"] is True
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_transaction_pooler_drops_session_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://orders:pw@pgbouncer:6432/mesh")
    monkeypatch.setenv("DATABASE_POOLER", "Transaction")
    config = database_config(schema="orders")
    # PgBouncer refuses the `options` startup parameter; the role's search_path applies instead.
    assert "options" not in config["OPTIONS"]
    assert config["OPTIONS"]["application_name"] == "orders"
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_session_pooler_keeps_server_side_cursors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://orders:pw@pgbouncer:6432/mesh")
    monkeypatch.setenv("DATABASE_POOLER", "session")
    config = database_config(schema="orders")
    assert "options" not in config["OPTIONS"]
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is False


def test_unknown_pooler_mode_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://orders:pw@pgbouncer:6432/mesh")
    monkeypatch.setenv("DATABASE_POOLER", "statement")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_POOLER must be empty, 'session' or"):
        database_config(schema="orders")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@h/db", "must start with postgres://"),
        ("postgres://u:p@h/", "must name a database"),
        ("postgres://u:p@h:notaport/db", "invalid port"),
    ],
)
def test_bad_database_url_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, url: str, message: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ImproperlyConfigured, match=message):
        database_config(schema="orders")


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "MESH_LOCAL_DEV", "DEBUG"}}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)",
        ],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "meshkit_testapp.settings",
            "PYTHONPATH": str(HERE),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secret_key_is_required_outside_local_dev() -> None:
    result = _import_settings({})
    assert result.returncode != 0
    assert "Set the environment variable SECRET_KEY." in result.stderr.strip().splitlines()[-1]


def test_short_secret_key_is_refused() -> None:
    result = _import_settings({"SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 32 characters long." in result.stderr


def test_local_dev_generates_a_secret_key_and_debug_defaults_off() -> None:
    result = _import_settings({"MESH_LOCAL_DEV": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_database_url_names_the_variable() -> None:
    result = _import_settings({"SECRET_KEY": "x" * 50, "DATABASE_URL": ""})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr.strip().splitlines()[-1]


def test_an_image_build_imports_settings_without_runtime_configuration() -> None:
    # collectstatic in a Dockerfile: no secret, no database address, nothing of the runtime's.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MESHAUTH_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DATABASES['default']['PORT'], len(settings.SECRET_KEY) >= 32)",
        ],
        env={
            **{k: v for k, v in clean.items() if k not in {"SECRET_KEY", "MESH_LOCAL_DEV"}},
            "DJANGO_SETTINGS_MODULE": "meshkit_testapp.settings",
            "PYTHONPATH": str(HERE),
            "MESHKIT_BUILD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # an address nothing listens on, and a throwaway key
    assert result.stdout.split() == ["1", "True"]
    # without the build flag the same import names the missing secret
    assert "SECRET_KEY" in _import_settings({}).stderr
