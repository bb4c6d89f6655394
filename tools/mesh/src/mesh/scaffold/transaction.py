"""Write a set of files all or nothing.

Everything is computed before the first write (see :mod:`mesh.scaffold.plan`); this module only
puts the result in place. Each file is written to a temporary name beside its target and renamed
over it (a reader never sees half a file); the original bytes of every file it replaces are kept in
memory. If anything fails, or the process is interrupted, before the last rename, every file written
so far is put back (or removed when it was new) together with the directories created for it, and
the error propagates. A file that changed on disk since it was read is never overwritten: another
engineer's edit wins and the whole write is refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Change", "ConcurrentEdit", "write_all_or_nothing"]


@dataclass(frozen=True)
class Change:
    """New content for ``path`` (relative to the root); ``before`` is what the plan was computed from
    (None: the file must not exist yet)."""

    content: bytes
    before: bytes | None
    executable: bool = False


class ConcurrentEdit(RuntimeError):
    """A target changed on disk between planning and writing."""


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace(source: Path, target: Path) -> None:
    # One seam for every rename, so a test can make the disk fail half-way through.
    os.replace(source, target)


def _put(path: Path, content: bytes, mode: int | None) -> None:
    temporary = path.with_name(f".{path.name}.mesh-new-{os.getpid()}")
    try:
        temporary.write_bytes(content)
        if mode is not None:
            os.chmod(temporary, mode)
        _replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _make_parents(path: Path, root: Path, created: list[Path]) -> None:
    missing = []
    for parent in path.parents:
        if parent == root or parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        directory.mkdir()
        created.append(directory)


def write_all_or_nothing(root: Path, changes: Mapping[Path, Change]) -> list[Path]:
    """Write every change under ``root``, or none of them; return the paths written (relative)."""
    for relative, change in changes.items():
        if _read(root / relative) != change.before:
            what = "appeared" if change.before is None else "changed"
            raise ConcurrentEdit(f"{relative} {what} while the service was being generated; run it again")
    written: list[tuple[Path, bytes | None, int | None]] = []
    created_dirs: list[Path] = []
    try:
        for relative, change in changes.items():
            path = root / relative
            _make_parents(path, root, created_dirs)
            mode = path.stat().st_mode & 0o7777 if path.exists() else (0o755 if change.executable else 0o644)
            original = _read(path)
            written.append((path, original, mode))
            _put(path, change.content, mode)
    except BaseException:
        _restore(written, created_dirs)
        raise
    return list(changes)


def _restore(written: list[tuple[Path, bytes | None, int | None]], created_dirs: list[Path]) -> None:
    """Undo what was written, newest first; keep going on errors so as much as possible is restored."""
    for path, original, mode in reversed(written):
        with contextlib.suppress(OSError):
            if original is None:
                path.unlink(missing_ok=True)
            else:
                _put_back(path, original, mode)
    # Only empty ones: a file someone else put there meanwhile stays, with its directory.
    for directory in reversed(created_dirs):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _put_back(path: Path, content: bytes, mode: int | None) -> None:
    # Not through _replace: a failing disk seam in a test must not stop the restore.
    temporary = path.with_name(f".{path.name}.mesh-restore-{os.getpid()}")
    try:
        temporary.write_bytes(content)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
