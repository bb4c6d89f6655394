"""Reservations get a lease (``expires_at``): safe under a rolling deploy.

The column is nullable (old pods keep inserting without it; readers treat NULL as created_at plus
the TTL) and the index is built CONCURRENTLY, so neither step blocks writes to the table. Outside a
transaction each statement must be safe to run again after a failure half-way: IF NOT EXISTS.
"""

from django.db import migrations, models
from django.db.models import Q

INDEX = models.Index(condition=Q(status="reserved"), fields=["expires_at"], name="reservation_held_expiry")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("products", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "products_reservation" ADD COLUMN IF NOT EXISTS "expires_at" '
                    "timestamp with time zone NULL",
                    reverse_sql='ALTER TABLE "products_reservation" DROP COLUMN IF EXISTS "expires_at"',
                ),
                migrations.RunSQL(
                    'CREATE INDEX CONCURRENTLY IF NOT EXISTS "reservation_held_expiry" '
                    """ON "products_reservation" ("expires_at") WHERE "status" = 'reserved'""",
                    reverse_sql='DROP INDEX CONCURRENTLY IF EXISTS "reservation_held_expiry"',
                ),
            ],
            state_operations=[
                migrations.AddField(
                    model_name="reservation",
                    name="expires_at",
                    field=models.DateTimeField(blank=True, null=True),
                ),
                migrations.AddIndex(model_name="reservation", index=INDEX),
            ],
        ),
    ]
