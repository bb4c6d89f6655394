"""Reservations get a lease (``expires_at``): safe under a rolling deploy.

The column is nullable (old pods keep inserting without it; readers treat NULL as created_at plus
the TTL) and the index is built CONCURRENTLY, so neither step blocks writes to the table.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("products", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexConcurrently(
            model_name="reservation",
            index=models.Index(
                condition=Q(status="reserved"), fields=["expires_at"], name="reservation_held_expiry"
            ),
        ),
    ]
