"""Create (or re-key) a service client for the client-credentials grant."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser

from identity.tokens.models import ServiceClient


class Command(BaseCommand):
    help = "Create or update a service client; prints the secret once unless it came from the environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id")
        parser.add_argument("--audience", action="append", default=[], help="a service it may call (repeat)")
        parser.add_argument("--scope", action="append", default=[], help="a scope its tokens carry (repeat)")
        parser.add_argument("--introspect", action="store_true", help="may call /auth/introspect")
        parser.add_argument(
            "--secret-env", metavar="VAR", help="take the secret from this environment variable"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["audience"] and not options["introspect"]:
            raise CommandError("Give at least one --audience (or --introspect).")
        if options["secret_env"]:
            secret = os.environ.get(options["secret_env"], "")
            if len(secret) < 16:
                raise CommandError(f"{options['secret_env']} must hold a secret of at least 16 characters.")
        else:
            secret = secrets.token_urlsafe(32)
        client, created = ServiceClient.objects.update_or_create(
            client_id=options["client_id"],
            defaults={
                "secret_hash": make_password(secret),
                "audiences": sorted(set(options["audience"])),
                "scopes": " ".join(sorted(set(options["scope"]))),
                "can_introspect": options["introspect"],
                "active": True,
            },
        )
        self.stdout.write(f"{'created' if created else 'updated'} service client {client.client_id}")
        if not options["secret_env"]:
            self.stdout.write(f"client secret (shown once): {secret}")
