"""X-Forwarded-Proto decides `request.is_secure()` in the app (gunicorn trusts its sidecar): only the
configured ingress may set it."""

from __future__ import annotations

from typing import Any

import httpx

SCHEME_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"}


def forwarded(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"] if k.lower().startswith("x-forwarded-")}


def test_an_untrusted_client_cannot_claim_https(start_sidecar: Any) -> None:
    sidecar = start_sidecar()  # no trusted proxies: the default
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers=SCHEME_HEADERS)
    assert response.status_code == 200
    assert forwarded(response) == {"x-forwarded-proto": "http", "x-forwarded-for": "127.0.0.1"}


def test_the_configured_ingress_may(start_sidecar: Any) -> None:
    sidecar = start_sidecar(MESHAUTH_SIDECAR_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1/32")
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers=SCHEME_HEADERS)
    assert forwarded(response) == {"x-forwarded-proto": "https", "x-forwarded-for": "127.0.0.1"}
    # Only the one header the sidecar sets, and only its two values.
    response = httpx.get(f"{sidecar.url}/api/v1/orders", headers={"X-Forwarded-Proto": "gopher"})
    assert forwarded(response)["x-forwarded-proto"] == "http"
