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
