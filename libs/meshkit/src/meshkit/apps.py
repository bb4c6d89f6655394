from django.apps import AppConfig


class MeshkitConfig(AppConfig):
    """Installs meshkit's management commands (``migrate_locked``)."""

    name = "meshkit"
    verbose_name = "meshkit"
