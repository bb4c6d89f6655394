from mesh.testing import django_db_setup  # noqa: F401 - migrate the session's real database
