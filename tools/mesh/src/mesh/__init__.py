"""Developer tooling for the mesh: not shipped in images."""
