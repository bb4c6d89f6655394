"""meshauth: verify identity-signed tokens locally, in Django or in the sidecar proxy."""
