"""Rotate identity's signing key without restarting anything.

The new key signs from now on; the old one stays in the JWKS until every token it signed has
expired. Verifiers refetch the JWKS when they meet the new ``kid``.
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

    def handle(self, *args: Any, **options: Any) -> None:
        overlap = datetime.timedelta(seconds=options["overlap"]) if options["overlap"] is not None else None
        new, retired = keys.rotate(options["algorithm"], overlap)
        self.stdout.write(f"new signing key {new.kid} ({new.algorithm})")
        for kid in retired:
            self.stdout.write(f"retired {kid}; still published until its tokens expire")
