"""``MeshAuthMiddleware``: sets ``request.principal`` (None when anonymous) on every request.

* ``inprocess`` mode: verifies the ``Authorization: Bearer`` token locally (JWKS cached).
* ``sidecar`` mode: trusts only principal headers signed by the pod's sidecar.

A credential that is present but not acceptable is answered with 401 right here, whatever the view;
anonymous requests go on and the view decides (``login_required``, ``service_required``, ``MeshAuth``).
In both modes every inbound identity header is removed from ``request.META`` so no view can read one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from meshauth.context import request_context
from meshauth.django.conf import MeshAuthSettings, get_settings, get_verifier
from meshauth.django.introspection import introspect
from meshauth.django.responses import Denial, invalid_token
from meshauth.errors import InvalidPrincipalHeaders, InvalidToken
from meshauth.headers import PRINCIPAL_HEADERS, bearer_token, strip_identity_meta, verify_principal_headers
from meshauth.metrics import default_metrics
from meshauth.principal import Principal
from meshcontract import REQUEST_ID_META

__all__ = ["DENIAL_ATTRIBUTE", "MeshAuthMiddleware"]

log = logging.getLogger("meshauth.django")

#: Where the decorators and the ninja auth class leave their :class:`Denial` for the middleware.
DENIAL_ATTRIBUTE = "_meshauth_denial"


def _warm_up() -> None:
    try:
        jwks = get_verifier().jwks
        if jwks.age() is None:
            jwks.refresh()
    except Exception:  # a failed warm-up only means the first request fetches
        log.warning("JWKS warm-up failed", exc_info=True)


# The principal headers as WSGI names them.
_PRINCIPAL_META = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in PRINCIPAL_HEADERS)


class MeshAuthMiddleware:
    """Authenticate the caller; place it after meshkit's request-id middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        conf = get_settings()  # a misconfigured service fails at start, not at its first request
        if conf.mode == "inprocess" and not conf.jwks_loader:
            # Fetch the keys while the worker boots, off the request path, so its first request
            # does not wait on identity (and a worker started while identity is down uses the
            # pod's cached copy instead).
            threading.Thread(target=_warm_up, name="meshauth-jwks-warm-up", daemon=True).start()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        conf = get_settings()
        request.principal = None  # type: ignore[attr-defined]
        request.auth_token = None  # type: ignore[attr-defined]
        try:
            if conf.mode == "sidecar":
                principal, token = self._from_sidecar(request, conf)
            else:
                principal, token = self._from_token(request, conf)
        except InvalidToken as exc:
            return invalid_token(exc).response()
        strip_identity_meta(request.META)
        if principal is None:
            default_metrics().decision("anonymous", "", conf.mode)
        request.principal = principal  # type: ignore[attr-defined]
        request.auth_token = token  # type: ignore[attr-defined]
        with request_context(request.META.get(REQUEST_ID_META), principal, token):
            response = self.get_response(request)
        denial: Denial | None = getattr(request, DENIAL_ATTRIBUTE, None)
        if denial is not None and response.status_code == denial.status:
            # django-ninja renders its own auth errors; give them the same body and challenge.
            return denial.response()
        return response

    @staticmethod
    def _from_token(request: HttpRequest, conf: MeshAuthSettings) -> tuple[Principal | None, str | None]:
        try:
            token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        except InvalidToken as exc:
            default_metrics().decision("rejected", exc.reason, conf.mode)
            raise
        if token is None:
            return None, None
        if conf.mode == "introspect":
            return introspect(token, conf.identity_url), token
        return get_verifier().verify(token), token

    @staticmethod
    def _from_sidecar(request: HttpRequest, conf: MeshAuthSettings) -> tuple[Principal | None, str | None]:
        try:
            # From META directly: request.headers would build a mapping of every header first.
            meta = request.META
            signed = {name: meta[key] for name, key in _PRINCIPAL_META if key in meta}
            principal = verify_principal_headers(
                signed, conf.principal_secret, max_age=conf.principal_max_age
            )
        except InvalidPrincipalHeaders as exc:
            default_metrics().decision("rejected", "bad_signature", "sidecar")
            raise InvalidToken("bad_signature", "The principal headers are not valid.") from exc
        if principal is None:
            return None, None
        default_metrics().decision("accepted", "", "sidecar")
        # The sidecar forwards the Authorization header only with a token it verified.
        try:
            token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        except InvalidToken:
            token = None
        return principal, token
