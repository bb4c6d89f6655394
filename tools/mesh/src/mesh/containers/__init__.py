"""The deployables run for real: images built with podman, the charts' pods under `podman kube play`.

`mesh images` (images.py) and `mesh pods` (pods.py, from the charts rendered by kube.py) are thin
commands over these modules; podman.py holds the engine's settings.
"""

from __future__ import annotations

from mesh.containers.commands import images_command, pods_command

__all__ = ["images_command", "pods_command"]
