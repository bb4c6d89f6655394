from django.db import models


class MigrationRun(models.Model):
    """One row per time the data migration ran: proves migrations apply exactly once."""

    ran_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"run at {self.ran_at}"


class Item(models.Model):
    name = models.CharField(max_length=50, unique=True)

    def __str__(self) -> str:
        return self.name
