"""``python -m mesh.observability generate | check | render`` (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh.observability.files import stale_files, write_all
from mesh.registry import find_root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.observability", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write every service's dashboard and rules, and the overview")
    sub.add_parser("check", help="exit 1 when a committed file differs from the generator's output")
    render = sub.add_parser("render", help="PNG previews of the dashboards from a real Prometheus run")
    render.add_argument("--out", type=Path, default=None, help="directory (default: docs/dashboards)")
    render.add_argument("--seconds", type=float, default=60.0, help="how long to drive traffic")
    render.add_argument("--only", nargs="*", default=[], metavar="NAME", help="only these services")
    args = parser.parse_args(argv)
    root = find_root()
    if args.command == "generate":
        for path in write_all(root):
            print(f"wrote {path.relative_to(root)}")
        return 0
    if args.command == "check":
        stale = stale_files(root)
        for path in stale:
            print(f"stale: {path} (run: python -m mesh.observability generate)", file=sys.stderr)
        return 1 if stale else 0
    from mesh.observability.render import render_previews

    for path in render_previews(
        root, args.out or root / "docs" / "dashboards", seconds=args.seconds, only=tuple(args.only)
    ):
        print(f"wrote {path.relative_to(root) if path.is_relative_to(root) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
