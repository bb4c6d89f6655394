"""Probes answer whatever the Host header says; errors are JSON; request ids flow through logs."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from meshkit.gunicorn import cpu_limit
from meshkit.logging import JsonFormatter, RequestIdFilter

pytestmark = pytest.mark.django_db

POD_IP = "10.42.7.19"


def test_livez_answers_a_pod_ip_host_without_touching_the_database(
    client: Client, django_assert_num_queries
) -> None:
    with django_assert_num_queries(0):
        response = client.get("/livez", HTTP_HOST=POD_IP)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_for_a_pod_ip_host(client: Client) -> None:
    response = client.get("/readyz", HTTP_HOST=f"{POD_IP}:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database:default": "ok"}}


def test_other_paths_still_enforce_allowed_hosts(client: Client) -> None:
    assert client.get("/items/a", HTTP_HOST=POD_IP).status_code == 400


def test_metrics_are_served_to_the_scraper(client: Client) -> None:
    client.get("/items/widget")
    response = client.get("/metrics", HTTP_HOST=POD_IP)
    assert response.status_code == 200
    text = response.content.decode()
    assert (
        'http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/items/<str:name>"}'
        in text
    )


def test_request_id_is_echoed_or_generated(client: Client) -> None:
    given = client.get("/items/a", HTTP_X_REQUEST_ID="abc-123")
    assert given["X-Request-ID"] == "abc-123"
    generated = client.get("/items/a", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert generated["X-Request-ID"] != "bad id\nwith newline"
    assert len(generated["X-Request-ID"]) == 32


def test_unknown_path_and_crash_are_json(client: Client) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found."}
    crashing = Client(raise_request_exception=False)
    response = crashing.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


def test_json_log_lines_carry_the_request_id_and_extras() -> None:
    record = logging.makeLogRecord({"msg": "hello %s", "args": ("world",), "levelname": "INFO", "name": "t"})
    record.request_id = "rid-1"
    record.item = "widget"
    assert RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello world"
    assert line["request_id"] == "rid-1"
    assert line["item"] == "widget"


def test_workers_follow_the_cgroup_cpu_limit(tmp_path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cpu_limit(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert cpu_limit(cpu_max) >= 1


@pytest.fixture
def split_ports(monkeypatch: pytest.MonkeyPatch) -> Client:
    """A client of an app with an internal port (9090) beside its public one (8000), admin not public."""
    monkeypatch.setenv("METRICS_BIND", "0.0.0.0:9090")
    monkeypatch.setenv("DJANGO_ADMIN_PUBLIC", "false")
    return Client()  # a new handler: the middleware reads the environment again


def test_metrics_only_on_the_internal_port(split_ports: Client) -> None:
    public = split_ports.get("/metrics", HTTP_HOST=POD_IP, SERVER_PORT="8000")
    assert public.status_code == 404
    assert public.json() == {"detail": "Not found."}
    internal = split_ports.get("/metrics", HTTP_HOST=POD_IP, SERVER_PORT="9090")
    assert internal.status_code == 200
    assert b"http_server_request_duration_seconds" in internal.content


def test_the_internal_port_serves_nothing_of_the_api(split_ports: Client) -> None:
    assert split_ports.get("/items/a", SERVER_PORT="9090").status_code == 404
    assert split_ports.get("/items/a", SERVER_PORT="8000").status_code == 200
    assert split_ports.get("/livez", HTTP_HOST=POD_IP, SERVER_PORT="9090").status_code == 200


def test_the_admin_is_off_the_public_port_unless_enabled(
    split_ports: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert split_ports.get("/admin/", SERVER_PORT="8000").status_code == 404
    # On the internal port the request goes on to the app's URLs (this test app mounts no admin).
    assert split_ports.get("/admin/", SERVER_PORT="9090").json() == {"detail": "Not found."}
    monkeypatch.setenv("DJANGO_ADMIN_PUBLIC", "true")
    monkeypatch.delenv("METRICS_BIND")
    assert Client().get("/metrics", HTTP_HOST=POD_IP).status_code == 200  # no internal port: as before
