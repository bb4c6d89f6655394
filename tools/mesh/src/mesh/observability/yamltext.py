"""A small, deterministic YAML writer for rule files (mesh-tools does not depend on PyYAML).

It writes mappings, lists, strings and numbers; multi-line strings (PromQL) become literal blocks so
the committed rules read like hand-written ones, and every other string is double-quoted JSON, which
is valid YAML whatever characters it holds.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dump"]

# Strings YAML reads back as the same string without quotes (no spaces, no indicator characters).
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
_DURATION = re.compile(r"^[0-9]+[smhdw]$")
_RESERVED = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        plain = (_PLAIN.match(value) or _DURATION.match(value)) and value.lower() not in _RESERVED
        return value if plain else json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _block(text: str, indent: int) -> str:
    pad = " " * indent
    return "|-\n" + "\n".join(pad + line if line else "" for line in text.split("\n"))


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                out += _lines(item, indent + 2)
            elif isinstance(item, str) and ("\n" in item or '"' in item):
                out.append(f"{pad}{key}: {_block(item, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {_scalar(item) if item != {} and item != [] else json.dumps(item)}")
        return out
    if isinstance(value, list):
        for item in value:
            sub = _lines(item, indent + 2)
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}- {sub[0].lstrip()}")
                out += sub[1:]
            else:
                out.append(f"{pad}- {sub[0].lstrip()}")
        return out
    if isinstance(value, str) and "\n" in value:
        return [pad + _block(value, indent + 2)]
    return [pad + _scalar(value)]


def dump(document: Any, header: str = "") -> str:
    """YAML text of ``document``, after ``header`` (comment lines, each starting with ``#``)."""
    return header + "\n".join(_lines(document, 0)) + "\n"
