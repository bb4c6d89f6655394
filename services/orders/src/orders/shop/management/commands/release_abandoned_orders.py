"""Give back stock held by order attempts that failed or died: run it from a CronJob, or by hand.

Normally the next request with the same Idempotency-Key does this; a client that never retries
would otherwise leave its reservation held at catalog for good.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from orders.shop.catalog_client import catalog_client
from orders.shop.models import Order
from orders.shop.placing import release_abandoned, stale_after


class Command(BaseCommand):
    help = "Release the catalog reservations of abandoned and stale order attempts."

    def handle(self, *args: Any, **options: Any) -> None:
        horizon = timezone.now() - stale_after()
        pending = Order.objects.filter(
            Q(status=Order.Status.ABANDONED)
            | Q(status__in=[Order.Status.RESERVING, Order.Status.RESERVED], updated_at__lt=horizon)
        )
        client = catalog_client()
        results: dict[str, int] = {}
        for order in pending.iterator():
            outcome = release_abandoned(order, client)
            results[outcome] = results.get(outcome, 0) + 1
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(results.items()))
        self.stdout.write(f"abandoned order attempts: {summary or 'none'}")
