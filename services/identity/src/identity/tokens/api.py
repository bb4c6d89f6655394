"""Login, refresh rotation, logout, the client-credentials grant and introspection."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password, make_password
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from ninja import Router, Schema, Status
from prometheus_client import Counter
from pydantic import Field

from identity.tokens import issuing, keys, ratelimit
from identity.tokens.models import ServiceClient

router = Router(tags=["tokens"])

LOGINS = Counter("identity_logins", "Password logins by outcome.", ("outcome",))
LOGIN_OUTCOMES = ("success", "failure", "throttled")
for _outcome in LOGIN_OUTCOMES:
    # At 0 from the first scrape, so the dashboards and rate() see "none yet", not "no data".
    LOGINS.labels(_outcome)

# Hashed once at import: a login for an unknown client_id costs what a known one does.
_DUMMY_SECRET_HASH = make_password("not-a-real-client-secret")


class Detail(Schema):
    detail: str


class TokenIn(Schema):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class TokensOut(Schema):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int


class RefreshIn(Schema):
    refresh_token: str = Field(max_length=200)


class ServiceTokenIn(Schema):
    client_id: str = Field(max_length=64)
    client_secret: str = Field(max_length=200)
    audience: str = Field(max_length=64)


class ServiceTokenOut(Schema):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int


def _too_many(wait: int) -> HttpResponse:
    response = JsonResponse({"detail": "Too many failed logins; try again later."}, status=429)
    response["Retry-After"] = str(wait)
    return response


@router.post(
    "auth/token",
    response={200: TokensOut, 401: Detail, 429: Detail},
    summary="Log in with email and password",
)
def token(request: HttpRequest, payload: TokenIn) -> Status[object] | HttpResponse:
    # authenticate() goes through the failed-login limiter (identity.accounts.backends), and hashes
    # the password even for an unknown email, so both answers take as long.
    user = authenticate(request, email=payload.email, password=payload.password)
    wait = getattr(request, "login_retry_after", None)
    if wait is not None:
        LOGINS.labels("throttled").inc()
        return _too_many(wait)
    if user is None:
        LOGINS.labels("failure").inc()
        return Status(401, {"detail": "Invalid email or password."})
    LOGINS.labels("success").inc()
    issued = issuing.issue(user)
    return Status(200, TokensOut(**issued.__dict__))


@router.post("auth/refresh", response={200: TokensOut, 401: Detail}, summary="Rotate a refresh token")
def refresh(request: HttpRequest, payload: RefreshIn) -> Status[object]:
    try:
        issued = issuing.refresh(payload.refresh_token)
    except issuing.RefreshRejected as exc:
        return Status(401, {"detail": str(exc).capitalize() + "."})
    return Status(200, TokensOut(**issued.__dict__))


@router.post("auth/logout", response={204: None, 401: Detail}, summary="Revoke a refresh token's session")
def logout(request: HttpRequest, payload: RefreshIn) -> Status[object]:
    if not issuing.logout(payload.refresh_token):
        return Status(401, {"detail": "Unknown refresh token."})
    return Status(204, None)


@router.post(
    "auth/service-token",
    response={200: ServiceTokenOut, 401: Detail, 403: Detail, 429: Detail},
    summary="Client-credentials grant for service-to-service calls",
)
def service_token(request: HttpRequest, payload: ServiceTokenIn) -> Status[object] | HttpResponse:
    try:
        # The address's budget only: a per-client lockout would let anyone cut a service off.
        attempt = ratelimit.attempt(None, request)
    except ratelimit.Throttled as exc:
        return _too_many(exc.wait)
    client = ServiceClient.objects.filter(client_id=payload.client_id, active=True).first()
    secret_ok = check_password(payload.client_secret, client.secret_hash if client else _DUMMY_SECRET_HASH)
    if client is None or not secret_ok:
        return Status(401, {"detail": "Invalid client credentials."})
    attempt.succeeded()
    if payload.audience not in client.audiences:
        return Status(403, {"detail": f"Client {client.client_id} may not call {payload.audience}."})
    access, ttl = issuing.service_token(client, payload.audience)
    return Status(200, ServiceTokenOut(access_token=access, expires_in=ttl))


@require_GET
def jwks_view(request: HttpRequest) -> JsonResponse:
    """``/.well-known/jwks.json``: every key a live token may be signed with."""
    response = JsonResponse(keys.jwks())
    # Verifiers cache anyway; a short shared cache absorbs a fleet restarting at once.
    response["Cache-Control"] = "public, max-age=60"
    return response
