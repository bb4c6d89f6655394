"""The input guard: no text input holding NUL, no repeated query parameter reaches a view; the
client gets the 400 contract."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from meshkit_testapp.models import Item

pytestmark = pytest.mark.django_db


def test_the_unguarded_view_stores_a_clean_name(client: Client) -> None:
    # The view under attack works, so the refusals below are the guard's doing.
    body = json.dumps({"item": {"name": "mug"}})
    assert client.post("/items", body, content_type="application/json").status_code == 201
    assert Item.objects.filter(name="mug").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"item": {"name": "a\x00b"}}, "item.name"),
        ({"item": {"name": "ok", "tags": ["x", "y\x00"]}}, "item.tags.1"),
        ({"item": {"name": "ok", "a\x00": 1}}, "item"),
    ],
)
def test_nul_in_a_json_body_is_400_naming_the_field(client: Client, body: dict, field: str) -> None:
    response = client.post("/items", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid request.",
        "errors": {field: ["must not contain NUL characters"]},
    }
    assert not Item.objects.exists()


def test_an_escaped_backslash_is_not_a_nul(client: Client) -> None:
    # The text "\u0000" (a backslash, then u0000) is legitimate; only the decoded NUL is refused.
    name = "\\u0000"
    response = client.post("/items", json.dumps({"item": {"name": name}}), content_type="application/json")
    assert response.status_code == 201
    assert Item.objects.get().name == name


def test_raw_nul_bytes_in_a_body_are_400(client: Client) -> None:
    response = client.post("/items", b'{"item": {"name": "a\x00"}}', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["must not contain NUL characters"]}
    assert not Item.objects.exists()


def test_nul_in_a_form_field_is_400(client: Client) -> None:
    response = client.post("/items", {"name": "a\x00b"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"name": ["must not contain NUL characters"]}
    assert not Item.objects.exists()


def test_nul_in_a_query_parameter_is_400(client: Client) -> None:
    response = client.get("/items/a?q=x%00")
    assert response.status_code == 400
    assert response.json()["errors"] == {"q": ["must not contain NUL characters"]}


def test_nul_in_the_path_names_nothing(client: Client) -> None:
    # The unguarded view would look the name up in the database and fail there.
    response = client.get("/items/a%00b")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_repeated_query_parameter_is_400(client: Client) -> None:
    response = client.get("/items/a?page=1&page=2&size=3")
    assert response.status_code == 400
    assert response.json()["errors"] == {"page": ["must be given once"]}
