"""meshkit_db_errors_total counts what says the database is unwell, and reads 0 before any error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client
from prometheus_client import REGISTRY

from mesh.postgres import free_port
from meshkit.metrics import RequestMetricsMiddleware
from meshkit_testapp.models import Item


def errors() -> float:
    return REGISTRY.get_sample_value("meshkit_db_errors_total", {"db_alias": "default"}) or 0.0


def serve(view) -> HttpResponse:  # type: ignore[no-untyped-def]
    request = HttpRequest()
    request.method = "GET"
    request.path_info = request.path = "/work"
    return RequestMetricsMiddleware(view)(request)


def test_the_error_series_exists_at_zero_before_any_error() -> None:
    RequestMetricsMiddleware(lambda request: HttpResponse())
    assert REGISTRY.get_sample_value("meshkit_db_errors_total", {"db_alias": "default"}) is not None


@pytest.mark.django_db
def test_a_lost_unique_race_is_not_a_database_error() -> None:
    Item.objects.create(name="taken")

    def view(request: HttpRequest) -> HttpResponse:
        try:
            with transaction.atomic():
                Item.objects.create(name="taken")
        except IntegrityError:
            return HttpResponse(status=409)
        return HttpResponse()

    before = errors()
    assert serve(view).status_code == 409
    assert errors() == before


@pytest.mark.django_db
def test_a_failing_statement_is_counted_once() -> None:
    before = errors()

    def view(request: HttpRequest) -> HttpResponse:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        return HttpResponse()

    with pytest.raises(Exception, match="no_such_table"):
        serve(view)
    assert errors() == before + 1


@pytest.fixture
def unreachable_database() -> Iterator[None]:
    """The default alias pointing at a port nobody listens on, restored afterwards."""
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unreachable_database")
def test_a_refused_connection_is_counted() -> None:
    """A connection that cannot be opened fails before any query runs; the alert still sees it."""
    before = errors()
    response = Client(raise_request_exception=False).get("/items/a")
    assert response.status_code == 503
    assert errors() == before + 1
    # A later request that does not touch the database adds nothing.
    serve(lambda request: HttpResponse())
    assert errors() == before + 1
