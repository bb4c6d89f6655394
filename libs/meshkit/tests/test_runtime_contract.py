"""meshkit.contract: the committed runtime-contract page is its output, and what it declares is served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from meshkit import contract

PAGE = Path(__file__).resolve().parents[3] / "docs" / "runtime-contract.md"
POD_IP = "10.42.7.19"


def test_the_committed_page_is_the_generators_output() -> None:
    page = PAGE.read_text()
    assert contract.rewrite(page) == page, "docs/runtime-contract.md is stale: run python -m meshkit.contract"


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
