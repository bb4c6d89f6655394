"""NUL in every string input of every operation of every service's OpenAPI document: always a 4xx,
never a 5xx, and nothing stored.

PostgreSQL's text cannot hold NUL; one guard in meshkit refuses it for every service. This test
reads the documents the running services publish, so a new operation or field is attacked as soon
as it exists (and a new operation without a valid base request below fails the test: add one).
Each attack starts from a request that would succeed, so "nothing stored" means something.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from securitylib import (
    PASSWORD,
    User,
    bearer,
    introspector_token,
    orders_service_token,
    row_counts,
    signup_and_login,
    staff_token,
)

from mesh.fleet import Fleet

NUL = "\x00"
SERVICES = ("identity", "catalog", "orders")


@dataclass
class Base:
    """A request to an operation that would succeed; the attacks change one input of it."""

    who: str | None
    body: Any = None
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    """What the base requests refer to: a user, a category, a product, a reservation, an order."""

    fleet: Fleet
    user: User
    tokens: dict[str, str]
    category: str
    sku: str
    reservation: str
    order: str


def _world(fleet: Fleet) -> World:
    user = signup_and_login(fleet)
    tokens = {
        "user": user.access_token,
        "staff": staff_token(fleet),
        "orders-service": orders_service_token(fleet),
        "introspector": introspector_token(fleet),
    }
    catalog, orders = fleet.url("catalog"), fleet.url("orders")
    category = f"nul-{uuid.uuid4().hex[:8]}"
    made = httpx.post(
        f"{catalog}/api/v1/categories",
        json={"slug": category, "name": "NUL"},
        headers=bearer(tokens["staff"]),
    )
    assert made.status_code == 201, made.text
    sku = f"NUL-{uuid.uuid4().hex[:8]}"
    product = {"sku": sku, "name": "Target", "price": "1.00", "stock": 100, "category": category}
    made = httpx.post(f"{catalog}/api/v1/products", json=product, headers=bearer(tokens["staff"]))
    assert made.status_code == 201, made.text
    reservation = str(uuid.uuid4())
    held = httpx.post(
        f"{catalog}/api/v1/reservations",
        json={"reservation_id": reservation, "items": [{"sku": sku, "qty": 1}]},
        headers=bearer(tokens["orders-service"]),
    )
    assert held.status_code == 201, held.text
    placed = httpx.post(
        f"{orders}/api/v1/orders",
        json={"items": [{"sku": sku, "qty": 1}]},
        headers={**bearer(tokens["user"]), "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert placed.status_code == 201, placed.text
    return World(fleet, user, tokens, category, sku, reservation, placed.json()["id"])


def base_requests(world: World) -> dict[tuple[str, str, str], Base]:
    """A succeeding request per operation, keyed by (service, METHOD, path template)."""
    secret = world.fleet.client_credentials()["orders"]["secret"]
    user, sku, category = world.user, world.sku, world.category
    fresh = uuid.uuid4().hex[:8]
    return {
        ("identity", "POST", "/api/v1/auth/signup"): Base(
            None, {"email": f"nul-{fresh}@example.com", "password": PASSWORD, "name": "Nul"}
        ),
        ("identity", "POST", "/api/v1/auth/token"): Base(None, {"email": user.email, "password": PASSWORD}),
        ("identity", "POST", "/api/v1/auth/refresh"): Base(None, {"refresh_token": user.refresh_token}),
        ("identity", "POST", "/api/v1/auth/logout"): Base(None, {"refresh_token": user.refresh_token}),
        ("identity", "POST", "/api/v1/auth/service-token"): Base(
            None, {"client_id": "orders", "client_secret": secret, "audience": "catalog"}
        ),
        ("identity", "POST", "/api/v1/auth/introspect"): Base(
            "introspector", {"token": user.access_token, "include_profile": True}
        ),
        ("identity", "GET", "/api/v1/me"): Base("user"),
        ("identity", "PATCH", "/api/v1/me"): Base("user", {"name": "N", "bio": "B", "cv_details": "C"}),
        ("catalog", "GET", "/api/v1/categories"): Base(None),
        ("catalog", "POST", "/api/v1/categories"): Base("staff", {"slug": f"c-{fresh}", "name": "C"}),
        ("catalog", "GET", "/api/v1/products"): Base(None, query={"category": category, "search": "Tar"}),
        ("catalog", "POST", "/api/v1/products"): Base(
            "staff",
            {
                "sku": f"N-{fresh}",
                "name": "N",
                "description": "D",
                "category": category,
                "price": "2.00",
                "currency": "EUR",
            },
        ),
        ("catalog", "GET", "/api/v1/products/{sku}"): Base(None, path={"sku": sku}),
        ("catalog", "PATCH", "/api/v1/products/{sku}"): Base(
            "staff",
            {"name": "M", "description": "E", "category": category, "price": "3.00", "currency": "EUR"},
            path={"sku": sku},
        ),
        ("catalog", "POST", "/api/v1/reservations"): Base(
            "orders-service", {"reservation_id": str(uuid.uuid4()), "items": [{"sku": sku, "qty": 1}]}
        ),
        ("catalog", "POST", "/api/v1/reservations/{reservation_id}/release"): Base(
            "orders-service", path={"reservation_id": world.reservation}
        ),
        ("catalog", "POST", "/api/v1/reservations/{reservation_id}/commit"): Base(
            "orders-service", path={"reservation_id": world.reservation}
        ),
        ("orders", "GET", "/api/v1/whoami"): Base("user"),
        ("orders", "POST", "/api/v1/orders"): Base(
            "user", {"items": [{"sku": sku, "qty": 1}]}, headers={"Idempotency-Key": f"k-{fresh}"}
        ),
        ("orders", "GET", "/api/v1/orders"): Base("user"),
        ("orders", "GET", "/api/v1/orders/{order_id}"): Base("user", path={"order_id": world.order}),
    }


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def string_fields(schema: dict[str, Any], spec: dict[str, Any], at: tuple[Any, ...] = ()) -> Iterator[tuple]:
    """Where a string can go in a body of this schema: ``("items", 0, "sku")``."""
    schema = _resolve(schema, spec)
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        yield from string_fields(alternative, spec, at)
    kind = schema.get("type")
    if kind == "string":
        yield at
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from string_fields(sub, spec, (*at, name))
    elif kind == "array":
        yield from string_fields(schema.get("items", {}), spec, (*at, 0))


def with_nul(body: Any, at: tuple[Any, ...]) -> Any:
    body = copy.deepcopy(body)
    target = body
    for step in at[:-1]:
        target = target[step]
    old = target.get(at[-1]) if isinstance(target, dict) else target[at[-1]]
    target[at[-1]] = (old if isinstance(old, str) else "nul") + NUL
    return body


@dataclass(frozen=True)
class Attack:
    service: str
    method: str
    path: str
    where: str
    body: Any
    path_params: dict[str, str]
    query: dict[str, str]


def attacks(world: World, specs: dict[str, dict[str, Any]]) -> Iterator[Attack]:
    bases = base_requests(world)
    for service, spec in specs.items():
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                key = (service, method.upper(), path)
                assert key in bases, f"no base request for {key}: add one to base_requests()"
                base = bases[key]
                # An undeclared parameter is an input too: the guard does not rely on the schema.
                yield Attack(*key, "query:undeclared", base.body, base.path, {**base.query, "x": f"a{NUL}"})
                for parameter in operation.get("parameters", []):
                    if parameter["in"] not in ("query", "path"):
                        continue  # headers cannot carry NUL over HTTP/1.1 (the client library refuses)
                    if "string" not in str(_resolve(parameter.get("schema", {}), spec)):
                        continue
                    name, where = parameter["name"], parameter["in"]
                    path_params, query = dict(base.path), dict(base.query)
                    target = path_params if where == "path" else query
                    target[name] = target.get(name, "v") + NUL
                    yield Attack(*key, f"{where}:{name}", base.body, path_params, query)
                content = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if content:
                    for at in sorted(set(string_fields(content["schema"], spec)), key=str):
                        yield Attack(
                            *key,
                            f"body:{'.'.join(map(str, at))}",
                            with_nul(base.body, at),
                            base.path,
                            base.query,
                        )


def send(world: World, attack: Attack) -> httpx.Response:
    base = base_requests(world)[(attack.service, attack.method, attack.path)]
    path = attack.path
    for name, value in attack.path_params.items():
        path = path.replace(f"{{{name}}}", quote(value, safe=""))
    headers = {**base.headers, **(bearer(world.tokens[base.who]) if base.who else {})}
    return httpx.request(
        attack.method,
        f"{world.fleet.url(attack.service)}{path}",
        params=attack.query,
        json=attack.body,
        headers=headers,
        timeout=30,
    )


def test_nul_in_every_string_input_is_refused_and_stores_nothing(mesh: Fleet) -> None:
    world = _world(mesh)
    specs = {s: httpx.get(f"{mesh.url(s)}/api/v1/openapi.json").json() for s in SERVICES}
    before = row_counts(mesh)
    tried, refused = [], []
    for attack in attacks(world, specs):
        response = send(world, attack)
        label = f"{attack.service} {attack.method} {attack.path} {attack.where}"
        tried.append(label)
        if not 400 <= response.status_code < 500 or not response.headers["content-type"].startswith(
            "application/json"
        ):
            refused.append(f"{label}: {response.status_code} {response.text[:200]}")
    assert not refused, "\n".join(refused)
    assert row_counts(mesh) == before, "an attack stored something"
    # Every operation was attacked, through the body fields the reports named.
    assert len({label.rsplit(" ", 1)[0] for label in tried}) == sum(
        len(ops) for spec in specs.values() for ops in spec["paths"].values()
    )
    for field_attacked in (
        "identity POST /api/v1/auth/token body:email",
        "identity POST /api/v1/auth/signup body:name",
        "identity PATCH /api/v1/me body:name",
        "identity POST /api/v1/auth/service-token body:client_id",
        "orders POST /api/v1/orders body:items.0.sku",
        "catalog GET /api/v1/products query:search",
    ):
        assert field_attacked in tried


def test_the_base_requests_succeed(mesh: Fleet) -> None:
    """Without the NUL, the same requests go through: the refusals above are the guard's doing."""
    world = _world(mesh)
    for (service, method, path), base in base_requests(world).items():
        if path.endswith(("/logout", "/commit", "/release")):
            continue  # these end the state the others need; their success is proven in their own suites
        attack = Attack(service, method, path, "none", base.body, base.path, base.query)
        response = send(world, attack)
        assert response.status_code < 300, (
            f"{service} {method} {path}: {response.status_code} {response.text}"
        )


@pytest.mark.parametrize("raw", [b'{"email": "a\x00b@x.com", "password": "p"}', b"\x00"])
def test_raw_nul_bytes_in_a_body_are_400(mesh: Fleet, raw: bytes) -> None:
    before = row_counts(mesh)
    response = httpx.post(
        f"{mesh.url('identity')}/api/v1/auth/token", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"]
    assert row_counts(mesh) == before
