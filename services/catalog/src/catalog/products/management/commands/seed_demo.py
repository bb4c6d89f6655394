"""Demo data for `make up`: a dozen products with stock in a few categories. Safe to run again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.products.models import Category, Product

CATEGORIES = {"kitchen": "Kitchen", "office": "Office", "outdoor": "Outdoor"}
PRODUCTS = [
    ("MUG-001", "Enamel mug", "kitchen", "12.50", 120),
    ("KTL-002", "Stovetop kettle", "kitchen", "39.90", 25),
    ("KNF-003", "Chef's knife", "kitchen", "64.00", 15),
    ("BRD-004", "Oak cutting board", "kitchen", "29.95", 40),
    ("PEN-101", "Fountain pen", "office", "24.00", 60),
    ("NTB-102", "Dotted notebook", "office", "9.99", 200),
    ("LMP-103", "Desk lamp", "office", "49.50", 30),
    ("CHR-104", "Task chair", "office", "189.00", 8),
    ("TNT-201", "Two-person tent", "outdoor", "149.00", 12),
    ("BTL-202", "Steel water bottle", "outdoor", "19.99", 150),
    ("LNT-203", "Head torch", "outdoor", "27.50", 45),
    ("BAG-204", "Day pack", "outdoor", "59.00", 20),
]


class Command(BaseCommand):
    help = "Create the demo categories and products unless they exist (stock is never reset)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
        with transaction.atomic():
            categories = {
                slug: Category.objects.get_or_create(slug=slug, defaults={"name": name})[0]
                for slug, name in CATEGORIES.items()
            }
            for sku, name, category, price, stock in PRODUCTS:
                # get_or_create, not update_or_create: a re-run must not undo sales or edits.
                _, was_created = Product.objects.get_or_create(
                    sku=sku,
                    defaults={
                        "name": name,
                        "category": categories[category],
                        "price": Decimal(price),
                        "currency": "EUR",
                        "stock": stock,
                        "description": f"{name} from the demo catalog.",
                    },
                )
                created += was_created
        self.stdout.write(f"seeded {created} new products ({len(PRODUCTS) - created} already there)")
