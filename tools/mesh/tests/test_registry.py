from pathlib import Path

import pytest

from mesh.registry import find_root, load_registry


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "mesh.toml").write_text(text)
    return tmp_path


def test_the_repository_registry_loads() -> None:
    registry = load_registry()
    identity = registry["identity"]
    assert identity.port == 8001
    assert identity.schema == "identity"
    assert identity.app_port == 9001


def test_root_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    root = write(tmp_path, "[services.a]\nport = 1\n")
    nested = root / "services" / "a"
    nested.mkdir(parents=True)
    assert find_root(nested) == root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services.a]\nport = 1\n[services.b]\nport = 1\n", "share a port"),
        (
            "[services.a]\nport = 1\nschema='s'\n[services.b]\nport = 2\nschema='s'\n",
            "share a schema",
        ),
        ("[services.a]\nport = 1\nreads = ['ghost']\n", "unknown service 'ghost'"),
    ],
)
def test_inconsistent_registry_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_registry(write(tmp_path, text))


def test_two_test_fleets_never_share_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fleets whose offsets are 1000 apart would share one: the first's app metrics port (mesh.toml
    port + 2000) is the second's sidecar metrics port (+ 3000). Both are chosen before either binds."""
    from mesh import testing

    registry = load_registry(find_root(Path(__file__)))
    monkeypatch.setattr(testing, "_ports_given", set())
    starts = iter([300, 200])  # candidate indices 100 apart: offsets 7000 and 6000
    monkeypatch.setattr(testing.random, "randrange", lambda _: next(starts))
    first, second = testing.free_port_offset(registry), testing.free_port_offset(registry)
    ports = [p for s in registry for p in (s.port, s.app_port, s.metrics_port, s.sidecar_metrics_port)]
    ports.append(testing.POOLER_PORT)
    assert {p + first for p in ports}.isdisjoint({p + second for p in ports}), (first, second)
