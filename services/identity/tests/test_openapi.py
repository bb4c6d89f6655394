"""The OpenAPI document promises every status the platform itself may answer, on every operation."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_every_operation_documents_the_platform_statuses(client: Client) -> None:
    document = client.get("/api/v1/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"400", "401", "408", "413", "414", "431", "503"} <= statuses, (method, path)
            if operation.get("security"):
                assert "403" in statuses, (method, path)
            invalid = operation["responses"]["400"]["content"]["application/json"]["schema"]
            if "$ref" in invalid:
                invalid = document["components"]["schemas"][invalid["$ref"].rsplit("/", 1)[-1]]
            assert set(invalid["required"]) == {"detail", "errors"}, (method, path)


def test_every_400_has_errors_even_when_no_field_is_named(client: Client) -> None:
    # ninja's own refusal of a body it cannot parse names no field; the shape stays the same.
    response = client.post("/api/v1/auth/token", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"}


def test_a_wrong_method_is_json_with_allow(client: Client) -> None:
    response = client.put("/api/v1/auth/token", data=json.dumps({}), content_type="application/json")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["detail"]
