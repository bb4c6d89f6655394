"""meshauth: verify identity-signed tokens locally, in Django or in the sidecar proxy.

The top-level package re-exports the Django-free API; Django pieces live in ``meshauth.django``.
"""

from meshauth.errors import REASONS, InvalidPrincipalHeaders, InvalidToken, Reason
from meshauth.headers import (
    IDENTITY_HEADER_NAMES,
    IDENTITY_HEADER_PREFIXES,
    PRINCIPAL_HEADERS,
    is_identity_header,
    sign_principal,
    strip_identity_headers,
    verify_principal_headers,
)
from meshauth.principal import Principal, PrincipalKind
from meshauth.verifier import Verifier

__all__ = [
    "IDENTITY_HEADER_NAMES",
    "IDENTITY_HEADER_PREFIXES",
    "PRINCIPAL_HEADERS",
    "REASONS",
    "InvalidPrincipalHeaders",
    "InvalidToken",
    "Principal",
    "PrincipalKind",
    "Reason",
    "Verifier",
    "is_identity_header",
    "sign_principal",
    "strip_identity_headers",
    "verify_principal_headers",
]
