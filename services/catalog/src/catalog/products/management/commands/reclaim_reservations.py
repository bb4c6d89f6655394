"""Take back the stock of expired reservations now (catalog also does it on every read and reserve)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from catalog.products.reservations import reclaim_expired


class Command(BaseCommand):
    help = "Put the stock of expired reservations (leases) back on sale."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        while reclaimed := reclaim_expired():
            total += reclaimed
        self.stdout.write(f"expired reservations taken back: {total}")
