"""meshkit: the runtime kit every service of the mesh imports."""
