"""The `mesh images` and `mesh pods` commands: progress lines, a summary table, clean exit codes."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

from mesh.containers.images import BuiltImage, build_images, canonical, pinned_bases
from mesh.containers.podman import Podman, missing_tools
from mesh.registry import Registry

__all__ = ["images_command", "pods_command"]

# Published size of the pinned base, for comparison only: python:3.11-slim-bookworm on Docker Hub,
# linux/amd64 (about 45 MB compressed; about 130 MB unpacked, as `podman images` counts).
PYTHON_SLIM_REFERENCE_MB = 130


def say(message: str) -> None:
    print(f"[mesh] {message}", flush=True)


def _check_tools() -> bool:
    missing = missing_tools()
    if missing:
        say(f"missing Debian packages: {' '.join(missing)} (apt-get install {' '.join(missing)})")
        return False
    return True


def images_command(registry: Registry, *, only: Iterable[str] = (), no_cache: bool = False) -> int:
    if not _check_tools():
        return 2
    only = list(only)
    known = {"meshauth", *registry.services}
    if set(only) - known:
        say(f"unknown image(s): {', '.join(sorted(set(only) - known))}; known: {', '.join(sorted(known))}")
        return 2
    podman = Podman(registry.root)
    started = time.monotonic()
    try:
        built = build_images(podman, registry, only=only, no_cache=no_cache, progress=say)
    except RuntimeError as exc:
        say(f"failed: {exc}")
        return 1
    print_images(podman, registry, built, time.monotonic() - started)
    return 0


def print_images(podman: Podman, registry: Registry, built: list[BuiltImage], seconds: float) -> None:
    rows = [("image", "size", "build")]
    rows += [(image.ref, f"{image.size / 1e6:.0f} MB", f"{image.seconds:.1f} s") for image in built]
    for base in pinned_bases(registry.root):
        if base.startswith("python:"):
            label = podman.inspect("image", canonical(base))["Labels"] or {}
            what = "stand-in" if "io.django-mesh.stand-in" in label else "pulled"
            size = podman.image_size(canonical(base)) / 1e6
            rows.append((f"{base} ({what})", f"{size:.0f} MB", "base"))
            rows.append((f"{base} (published, reference)", f"~{PYTHON_SLIM_REFERENCE_MB} MB", "base"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))
    print(f"\n  total {seconds:.0f} s\n", flush=True)


def pods_command(registry: Registry, args: argparse.Namespace) -> int:
    from mesh.containers.pods import run_pods

    if not _check_tools():
        return 2
    return run_pods(registry, args, progress=say)
