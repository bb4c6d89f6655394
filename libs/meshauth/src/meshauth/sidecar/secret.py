"""``meshauth-principal-secret PATH``: create the pod's principal secret before the sidecar and app start.

The sidecar signs the principal headers it forwards with a secret only its pod knows, and the app
checks them with the same secret. The chart runs this as the pod's first init container, writing into
a memory-backed volume both containers mount read-only, so the secret is born inside the pod and is
never in a values file, a ConfigMap, an image or etcd.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

__all__ = ["MIN_BYTES", "ensure_principal_secret", "main"]

MIN_BYTES = 32
"""An existing secret shorter than this is replaced."""


def ensure_principal_secret(path: Path) -> bool:
    """Write a random secret to ``path`` unless a long enough one is there; True when written.

    An init container can run again in the same pod (its sandbox restarted): keeping the existing
    secret keeps the sidecar and the app agreeing. The file is written under a temporary name and
    renamed, so no reader ever sees it half written, and only its owner can read it.
    """
    try:
        if len(path.read_bytes().strip()) >= MIN_BYTES:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    partial.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: meshauth-principal-secret PATH", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        written = ensure_principal_secret(path)
    except OSError as exc:
        print(f"meshauth-principal-secret: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(f"principal secret {'created' if written else 'kept'} at {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
