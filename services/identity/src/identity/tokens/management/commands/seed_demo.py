"""Local demo data, idempotent: a staff user and the service clients the fleet needs (`make up` only)."""

from __future__ import annotations

import json
import os
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError

from identity.accounts.models import User
from identity.tokens.models import ServiceClient

ADMIN_EMAIL = "admin@example.com"


class Command(BaseCommand):
    help = "Seed a staff user and service clients for local development (refuses outside MESH_LOCAL_DEV)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.LOCAL_DEV:
            raise CommandError("seed_demo only runs with MESH_LOCAL_DEV=1: it creates a known password.")
        password = os.environ.get("MESH_ADMIN_PASSWORD") or "admin"
        admin, created = User.objects.get_or_create(
            email=ADMIN_EMAIL, defaults={"name": "Admin", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(password)
            admin.save()
            self.stdout.write(f"staff user {ADMIN_EMAIL} / password {password!r} (MESH_ADMIN_PASSWORD)")
        else:
            self.stdout.write(f"staff user {ADMIN_EMAIL} exists")
        for client_id, client in _clients().items():
            audiences = sorted(client["audiences"])
            ServiceClient.objects.update_or_create(
                client_id=client_id,
                defaults={
                    "secret_hash": make_password(client["secret"]),
                    "audiences": audiences,
                    "can_introspect": True,
                    "active": True,
                },
            )
            self.stdout.write(f"service client {client_id} -> {', '.join(audiences) or 'identity only'}")


def _clients() -> dict[str, dict[str, Any]]:
    """``{client_id: {"audiences": [...], "secret": ...}}`` from MESH_SERVICE_CLIENTS (`mesh up` sets it)."""
    try:
        clients: dict[str, dict[str, Any]] = json.loads(os.environ.get("MESH_SERVICE_CLIENTS") or "{}")
    except json.JSONDecodeError as exc:
        raise CommandError(f"MESH_SERVICE_CLIENTS is not JSON: {exc}") from None
    return clients
