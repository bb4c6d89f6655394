"""The runtime contract (meshcontract): the committed page is its output, what it declares is served, and
one edit of a fact there reaches meshkit, meshauth's Django settings and the sidecar alike."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from django.test import Client, override_settings

import meshcontract as contract
from meshauth.django import conf as meshauth_conf
from meshauth.settings import SidecarSettings

PAGE = Path(__file__).resolve().parents[3] / "docs" / "runtime-contract.md"
POD_IP = "10.42.7.19"
# What the sidecar needs besides the contract's defaults.
SIDECAR_ENV = {
    "MESHAUTH_ISSUER": "http://identity.test",
    "MESHAUTH_AUDIENCE": "orders,mesh",
    "MESHAUTH_JWKS_URL": "http://identity.test/.well-known/jwks.json",
    "MESHAUTH_PRINCIPAL_SECRET": "a-principal-secret-of-32-bytes!!",
}
APP_SETTINGS = {
    "MESHAUTH_MODE": "inprocess",
    "MESHAUTH_ISSUER": "http://identity.test",
    "MESHAUTH_AUDIENCE": ["orders", "mesh"],
    "MESHAUTH_JWKS_URL": "http://identity.test/.well-known/jwks.json",
}


def test_the_committed_page_is_the_generators_output() -> None:
    page = PAGE.read_text()
    assert contract.rewrite(page) == page, "docs/runtime-contract.md is stale: run python -m meshcontract"


def test_every_declared_variable_has_one_row_on_the_page() -> None:
    page = PAGE.read_text()
    for variable in contract.VARIABLES:
        assert page.count(f"| `{variable.name}` |") == 1, variable.name


def test_check_fails_on_a_hand_edit_and_generate_repairs_it(tmp_path: Path, capsys) -> None:
    page = tmp_path / "runtime-contract.md"
    page.write_text(PAGE.read_text().replace("| `DEBUG` | bool | `false` |", "| `DEBUG` | bool | `true` |"))
    assert contract.main([str(page), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert contract.main([str(page)]) == 0
    assert contract.main([str(page), "--check"]) == 0
    assert page.read_text() == PAGE.read_text()


def test_a_page_without_markers_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    page = tmp_path / "runtime-contract.md"
    page.write_text("# Runtime contract\n")
    assert contract.main([str(page), "--check"]) == 2
    assert "no BEGIN/END markers" in capsys.readouterr().err
    assert page.read_text() == "# Runtime contract\n"


def test_a_changed_default_changes_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """One edit of the declaration is the whole change of the documented fact."""
    bind = contract.variable("GUNICORN_BIND")
    changed = tuple(
        v if v is not bind else contract.Variable(**{**bind.__dict__, "default": "0.0.0.0:8888"})
        for v in contract.VARIABLES
    )
    monkeypatch.setattr(contract, "VARIABLES", changed)
    assert "| `GUNICORN_BIND` | address | `0.0.0.0:8888` |" in contract.render_tables()


def test_the_ports_table_is_the_contracts_and_names_no_service_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's ports and the local offsets come from the declarations; each service's own local port
    is mesh.toml's, which the page points at instead of copying."""
    page = PAGE.read_text()
    ports = page[page.index(contract.PORTS_BEGIN) : page.index(contract.PORTS_END)]
    fleet = tomllib.loads((PAGE.parents[1] / "mesh.toml").read_text())["services"]
    assert fleet, "mesh.toml names no service: the check would be vacuous"
    for service in fleet.values():
        assert str(service["port"]) not in ports
    assert "`mesh.toml`" in ports
    monkeypatch.setattr(contract, "UPSTREAM_SOCKET", "/run/app/gunicorn.sock")
    monkeypatch.setattr(contract, "LOCAL_METRICS_PORT_OFFSET", 2500)
    assert "`unix:/run/app/gunicorn.sock`" in contract.render_ports()
    assert "`port + 2500`" in contract.render_ports()


def test_fleet_families_are_spelled_out_per_service() -> None:
    names = contract.names(contract.Reader.APP, "orders", calls=["catalog"], reads=["catalog"])
    assert {"CATALOG_URL", "CATALOG_READ_DATABASE_URL", "CATALOG_TIMEOUT"} <= set(names)
    identity = contract.names(contract.Reader.APP, "identity")
    assert "CATALOG_TIMEOUT" not in identity
    assert "IDENTITY_LOGIN_WINDOW" in identity
    assert not any("<" in name for name in identity)
    sidecar = contract.names(contract.Reader.SIDECAR, "orders", calls=["catalog"], reads=["catalog"])
    assert "MESHAUTH_SIDECAR_LISTEN" in sidecar
    assert "DATABASE_URL" not in sidecar


@pytest.mark.django_db
def test_the_declared_probe_paths_are_served_whatever_the_host(client: Client) -> None:
    for path in (*contract.PROBES, contract.METRICS):
        response = client.get(path, HTTP_HOST=POD_IP)
        assert response.status_code == 200, path


@pytest.mark.django_db
def test_the_declared_request_id_header_is_echoed(client: Client) -> None:
    header = contract.REQUEST_ID_HEADER
    response = client.get("/items/a", headers={header: "abc-123"})
    assert response[header] == "abc-123"


@pytest.mark.django_db
@pytest.mark.parametrize(("given", "kept"), [("a" * 128, True), ("a" * 129, False), ("id;drop", False)])
def test_the_request_id_rule_is_the_contracts(client: Client, given: str, kept: bool) -> None:
    assert (re.fullmatch(contract.REQUEST_ID_PATTERN, given) is not None) is kept
    echoed = client.get("/items/a", headers={contract.REQUEST_ID_HEADER: given})[contract.REQUEST_ID_HEADER]
    assert (echoed == given) is kept


def _is_probe_answer(client: Client, path: str) -> bool:
    response = client.get(path, HTTP_HOST=POD_IP)
    return response.status_code == 200 and response.json().get("status") == "ok"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/livez", "/readyz", "/livez/", "/livez/x", "/livezz", "/readyz/x", "/items/a", "/"]
)
def test_the_app_and_the_sidecar_treat_a_path_alike(client: Client, path: str) -> None:
    """What meshkit answers as a probe is exactly what the sidecar (its defaults) lets through
    without a token: one rule, the contract's exact match."""
    sidecar = SidecarSettings.from_env(SIDECAR_ENV)
    assert _is_probe_answer(client, path) is sidecar.is_public(path) is contract.is_probe(path)


def test_one_edit_of_a_default_reaches_the_app_and_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The only change is the declaration; Django's settings object, the sidecar's and the
    verifiers both build follow it, and so does the page."""
    before = SidecarSettings.from_env(SIDECAR_ENV)
    leeway = contract.variable("MESHAUTH_LEEWAY")
    assert before.leeway == float(leeway.default or "")
    edited = contract.Variable(**{**leeway.__dict__, "default": "45"})
    declared = tuple(edited if v is leeway else v for v in contract.VARIABLES)
    monkeypatch.setattr(contract, "VARIABLES", declared)

    sidecar = SidecarSettings.from_env(SIDECAR_ENV)
    with override_settings(**APP_SETTINGS):
        app = meshauth_conf.get_settings()
        assert (app.leeway, sidecar.leeway) == (45, 45)
        assert meshauth_conf.get_verifier().leeway == sidecar.verifier().leeway == 45
    assert "| `MESHAUTH_LEEWAY` | float | `45` |" in contract.render_tables()


def test_one_edit_of_a_probe_path_reaches_meshkit_and_the_sidecar(tmp_path: Path) -> None:
    """Edit one line of the contract's source (``LIVEZ``) and, in a fresh process importing the edited
    package, meshkit answers the new path, the sidecar forwards it without a token, and the old path
    is neither."""
    edited = tmp_path / "meshcontract"
    shutil.copytree(Path(contract.__file__).parent, edited)
    source = edited / "__init__.py"
    line = 'LIVEZ: Final = "/livez"'
    assert source.read_text().count(line) == 1, "the probe path is declared on one line"
    source.write_text(source.read_text().replace(line, 'LIVEZ: Final = "/healthz"'))
    check = textwrap.dedent(
        f"""
        import django, json
        django.setup()
        from django.test import Client
        from meshauth.settings import SidecarSettings
        sidecar = SidecarSettings.from_env({SIDECAR_ENV!r})
        client = Client()
        def probe(path):
            response = client.get(path, HTTP_HOST={POD_IP!r})
            return response.status_code == 200 and json.loads(response.content).get("status") == "ok"
        print(json.dumps({{path: [probe(path), sidecar.is_public(path)] for path in ("/healthz", "/livez")}}))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parent)]),
        "DJANGO_SETTINGS_MODULE": "meshkit_testapp.settings",
        "MESH_LOCAL_DEV": "1",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/none",  # /livez does no I/O: nothing connects
    }
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '{"/healthz": [true, true], "/livez": [false, false]}'
