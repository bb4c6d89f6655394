from collections.abc import Iterator

import pytest

from mesh.testing import django_db_setup  # noqa: F401 - migrate the session's real database
from meshauth.django import conf


@pytest.fixture(autouse=True)
def _fresh_verifier() -> Iterator[None]:
    """Each test's keys are its own (tables are emptied between tests): forget cached ones."""
    conf.reset()
    yield
    conf.reset()
