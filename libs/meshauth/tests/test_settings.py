"""meshauth.settings: the app (Django's settings, else the environment) and the sidecar (the
environment) read the shared variables alike, with the contract's defaults, and refuse a bad value
with the same one line naming the variable."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import meshcontract
from meshauth.django.conf import get_settings
from meshauth.sidecar.config import ConfigError, SidecarConfig
from meshauth.verifier import Verifier

SECRET = "a-principal-secret-of-32-bytes!!"
REQUIRED = {
    "MESHAUTH_ISSUER": "http://identity.test",
    "MESHAUTH_AUDIENCE": "orders,mesh",
    "MESHAUTH_JWKS_URL": "http://identity.test/.well-known/jwks.json",
    "MESHAUTH_PRINCIPAL_SECRET": SECRET,
}
SHARED = ("leeway", "max_token_bytes", "jwks_ttl", "jwks_min_refresh_interval", "jwks_max_staleness")


def _app(settings: Any, **values: object) -> Any:
    settings.MESHAUTH_MODE = "inprocess"
    for name, value in {**REQUIRED, **values}.items():
        setattr(settings, name, value)
    return get_settings()


def test_unset_means_the_contracts_default_in_both(settings: Any) -> None:
    app, sidecar = _app(settings), SidecarConfig.from_env(REQUIRED)
    for field in SHARED:
        assert getattr(app, field) == getattr(sidecar, field), field
    declared = meshcontract.variable("MESHAUTH_JWKS_MAX_STALENESS").default
    assert app.jwks_max_staleness == sidecar.jwks_max_staleness == float(declared or "")
    assert app.algorithms == sidecar.algorithms == ("RS256", "EdDSA")
    # An empty value is unset, not an empty list or zero.
    assert SidecarConfig.from_env({**REQUIRED, "MESHAUTH_LEEWAY": ""}).leeway == app.leeway


def test_a_django_setting_may_be_typed_already(settings: Any) -> None:
    app = _app(settings, MESHAUTH_AUDIENCE=["orders", "mesh"], MESHAUTH_LEEWAY=5)
    assert (app.audience, app.leeway) == (("orders", "mesh"), 5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MESHAUTH_LEEWAY", "soon", "MESHAUTH_LEEWAY='soon' is not a number."),
        ("MESHAUTH_LEEWAY", "61", "MESHAUTH_LEEWAY must be between 0 and 60 seconds."),
        ("MESHAUTH_JWKS_TTL", "-1", "MESHAUTH_JWKS_TTL must not be negative."),
        ("MESHAUTH_MAX_TOKEN_BYTES", "8k", "MESHAUTH_MAX_TOKEN_BYTES='8k' is not a whole number."),
        ("MESHAUTH_ALGORITHMS", "HS256", "MESHAUTH_ALGORITHMS must name some of EdDSA, RS256, not 'HS256'."),
        (
            "MESHAUTH_JWKS_URL",
            "http+unix://run/app.sock/.well-known/jwks.json",
            "MESHAUTH_JWKS_URL='http+unix://run/app.sock/.well-known/jwks.json': the socket path must be "
            "absolute and percent-encoded (%2Frun%2F…)",
        ),
    ],
)
def test_a_bad_value_is_the_same_one_line_error_in_both(
    settings: Any, name: str, value: str, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured) as app:
        _app(settings, **{name: value})
    with pytest.raises(ConfigError) as sidecar:
        SidecarConfig.from_env({**REQUIRED, name: value})
    assert str(app.value) == str(sidecar.value) == message


def test_what_each_mode_requires_is_named(settings: Any) -> None:
    missing = {k: v for k, v in REQUIRED.items() if k != "MESHAUTH_JWKS_URL"}
    with pytest.raises(ConfigError, match=r"^Set MESHAUTH_JWKS_URL \(the sidecar verifies every token\)\.$"):
        SidecarConfig.from_env(missing)
    with pytest.raises(ConfigError, match="^Set MESHAUTH_PRINCIPAL_SECRET or MESHAUTH_PRINCIPAL_SECRET_FILE"):
        SidecarConfig.from_env({**REQUIRED, "MESHAUTH_PRINCIPAL_SECRET": "short"})
    inprocess = r"^Set MESHAUTH_JWKS_URL \(required in inprocess mode\)\.$"
    with pytest.raises(ImproperlyConfigured, match=inprocess):
        _app(settings, MESHAUTH_JWKS_URL="")
    # identity verifies its own tokens: a loader replaces the URL.
    assert _app(settings, MESHAUTH_JWKS_URL="", MESHAUTH_JWKS_LOADER="json.loads").jwks_loader == "json.loads"


def test_the_sidecar_and_the_app_build_the_same_verifier(settings: Any) -> None:
    app = _app(settings, MESHAUTH_LEEWAY="7")
    sidecar = SidecarConfig.from_env({**REQUIRED, "MESHAUTH_LEEWAY": "7"})
    app_verifier, sidecar_verifier = app.verifier(), sidecar.verifier(mode="sidecar")
    try:
        for attribute in ("issuer", "audiences", "leeway", "max_token_bytes", "algorithms"):
            assert getattr(app_verifier, attribute) == getattr(sidecar_verifier, attribute), attribute
        assert app_verifier.jwks.url == sidecar_verifier.jwks.url
    finally:
        app_verifier.close()
        sidecar_verifier.close()


def test_a_verifier_built_without_options_has_the_contracts_defaults() -> None:
    """Code that builds a Verifier (or a JWKSCache) directly gets what the settings would give it."""

    def declared(name: str) -> float:
        return float(meshcontract.variable(name).default or "nan")

    verifier = Verifier(
        issuer="http://identity.test", audience="orders", jwks_url="http://identity.test/jwks"
    )
    try:
        assert verifier.leeway == declared("MESHAUTH_LEEWAY")
        assert verifier.max_token_bytes == declared("MESHAUTH_MAX_TOKEN_BYTES")
        jwks = verifier.jwks
        assert (jwks.ttl, jwks.min_refresh_interval, jwks.max_staleness) == (
            declared("MESHAUTH_JWKS_TTL"),
            declared("MESHAUTH_JWKS_MIN_REFRESH_INTERVAL"),
            declared("MESHAUTH_JWKS_MAX_STALENESS"),
        )
        assert jwks._client.timeout.read == declared("MESHAUTH_HTTP_TIMEOUT")
    finally:
        verifier.close()
