"""identity_logins_total{outcome}: what the mesh overview's login panel shows."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from identity.accounts.models import User
from identity.tokens.api import LOGIN_OUTCOMES

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def logins(outcome: str) -> float:
    value = REGISTRY.get_sample_value("identity_logins_total", {"outcome": outcome})
    assert value is not None, f"identity_logins_total{{outcome={outcome!r}}} is not exported"
    return value


def login(client: Client, password: str) -> int:
    body = json.dumps({"email": "bob@example.com", "password": password})
    return client.post("/api/v1/auth/token", data=body, content_type="application/json").status_code


def test_logins_are_counted_by_outcome(client: Client) -> None:
    User.objects.create_user("bob@example.com", PASSWORD)
    before = {outcome: logins(outcome) for outcome in LOGIN_OUTCOMES}
    assert login(client, "wrong password") == 401
    assert login(client, PASSWORD) == 200
    assert logins("failure") == before["failure"] + 1
    assert logins("success") == before["success"] + 1
    assert logins("throttled") == before["throttled"]
