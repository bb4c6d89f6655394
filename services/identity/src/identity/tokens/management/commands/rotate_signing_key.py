"""Rotate identity's signing key without restarting anything.

The new key is published at once and signs after ``--activate-after`` seconds (by then every
verifier has refreshed its JWKS); the old one stays published until every token it signed has
expired. Nothing restarts.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from identity.tokens import keys


class Command(BaseCommand):
    help = "Create a new signing key and retire the current one after an overlap window."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--algorithm", choices=keys.ALGORITHMS, default=None)
        parser.add_argument(
            "--overlap",
            type=int,
            default=None,
            help="Seconds the retired key stays published (default: access-token lifetime + 60).",
        )

        parser.add_argument(
            "--activate-after",
            type=int,
            default=None,
            help="Seconds between publishing the new key and signing with it "
            "(default: IDENTITY_KEY_ACTIVATION_DELAY, 60).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        overlap = datetime.timedelta(seconds=options["overlap"]) if options["overlap"] is not None else None
        delay = options["activate_after"]
        activate_after = datetime.timedelta(seconds=delay) if delay is not None else None
        new, retired = keys.rotate(options["algorithm"], overlap, activate_after)
        self.stdout.write(
            f"new signing key {new.kid} ({new.algorithm}), published now, signs from {new.activates_at}"
        )
        for kid in retired:
            self.stdout.write(f"{kid} retires then; still published until its tokens expire")
