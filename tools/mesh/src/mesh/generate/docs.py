"""Generated blocks inside hand-written documents: README.md's table of the local mesh and its journey.

Each block sits between a BEGIN and an END marker naming it (HTML comments, invisible on GitHub); the
text around it stays the author's.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from mesh.journey import JOURNEY
from mesh.registry import Registry

__all__ = ["begin", "end", "files", "fleet_table", "journey", "replace_block"]

README = Path("README.md")
SOURCE = "tools/mesh/src/mesh/generate/docs.py"


def begin(block: str) -> str:
    return f"<!-- BEGIN generated {block}: `make generate`, from mesh.toml and {SOURCE}; edit those -->"


def end(block: str) -> str:
    return f"<!-- END generated {block} -->"


def fleet_table(registry: Registry) -> str:
    """Where each service of the local mesh (`make up`) answers."""
    lines = [
        "| service | URL (sidecar) | app (gunicorn, behind the sidecar) | API docs |",
        "|---|---|---|---|",
    ]
    for service in registry:
        url = f"http://127.0.0.1:{service.port}"
        socket = f"`.mesh/run/{service.name}/app.sock`"
        lines.append(f"| {service.name} | {url} | {socket} | {url}/api/v1/docs |")
    return "\n".join(lines)


def journey(registry: Registry) -> str:
    """The curl journey `mesh up` prints (mesh.journey), with the ports of mesh.toml."""
    needed = ("identity", "catalog", "orders")
    if not set(needed) <= set(registry.services):
        return f"(The journey goes through {', '.join(needed)}; mesh.toml does not list them all.)"
    urls = {name: f"http://127.0.0.1:{registry[name].port}" for name in needed}
    steps = JOURNEY.format(**urls).split("\n", 1)[1]  # without its "Try it:" line
    return f"```bash\n{textwrap.dedent(steps).rstrip()}\n```"


BLOCKS: dict[Path, dict[str, Callable[[Registry], str]]] = {
    README: {"fleet-table": fleet_table, "journey": journey},
}


def replace_block(document: str, block: str, text: str, where: Path) -> str:
    """``document`` with the text between the markers of ``block`` replaced by ``text``."""
    start, stop = document.find(begin(block)), document.find(end(block))
    if start < 0 or stop < start:
        raise ValueError(
            f"{where} has no generated block {block!r} (the lines {begin(block)!r} and {end(block)!r})"
        )
    return f"{document[:start]}{begin(block)}\n{text}\n{document[stop:]}"


def files(root: Path, registry: Registry) -> dict[Path, str]:
    """The documents of ``root`` with their generated blocks as ``registry`` gives them."""
    found = {}
    for relative, blocks in BLOCKS.items():
        document = (root / relative).read_text()
        for block, text in blocks.items():
            document = replace_block(document, block, text(registry), relative)
        found[relative] = document
    return found
