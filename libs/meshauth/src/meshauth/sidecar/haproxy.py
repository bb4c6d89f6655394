"""The sidecar's per-request work as an HAProxy configuration: a data plane in C.

The Python sidecar (:mod:`meshauth.sidecar.proxy`) costs about 180 us of CPU per proxied request on the
2-core development machine, most of it uvloop and the interpreter moving bytes; no Python change has
taken it lower (README, Performance). HAProxy (2.6, Debian's) verifies JWTs (``jwt_verify``, OpenSSL)
and computes HMACs (``hmac``) itself, so it can do all the sidecar does per request. This module writes
that configuration; :class:`DataPlane` runs HAProxy from the sidecar process
(``MESHAUTH_SIDECAR_ENGINE=haproxy``), which stays the control plane: the JWKS, reloads, metrics, signals.
`make bench` measures both engines side by side (about 120 us per request for this one).

Per request, in the Python sidecar's order and with its answers (``{"detail", "reason"}`` JSON, the
same statuses and reasons):

1. identity headers (:func:`meshauth.headers.is_identity_header`'s lists) are removed; the request id
   is kept when valid, else generated; the request target is checked (origin-form, no fragment, no dot
   segment, a length cap);
2. too many header fields, too many header bytes: 431; a declared body over the cap: 413;
3. a public path (``MESHAUTH_PUBLIC_PATHS``) is forwarded without a token (``Authorization`` dropped);
   no ``Authorization`` at all: forwarded anonymous;
4. the token, with :class:`meshauth.verifier.Verifier`'s checks and reasons: one Bearer value within
   ``MESHAUTH_MAX_TOKEN_BYTES``, three base64url segments, a JSON header with an allowed algorithm, no
   ``crit``, no key reference, a kid identity publishes for that algorithm, a valid signature; the
   claims ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` present, ``iat``/``nbf`` not in the future and
   ``exp`` not past (``MESHAUTH_LEEWAY``), the issuer, an audience, ``token_use`` an access or service
   token. An accepted token is remembered (see ``_NEW``), its expiry checked on every request;
5. the principal headers (:mod:`meshauth.headers`, v1, unchanged for the app): the token's own payload
   segment, the time, and their HMAC under ``MESHAUTH_PRINCIPAL_SECRET``; the forwarded headers;
6. one JSON access line per request (the Python sidecar's fields, and the auth decision, a refusal's
   reason, HAProxy's termination state), from which the sidecar process counts the sidecar's metrics
   (:class:`AccessLines`);
7. the app's ``/livez`` asked by HAProxy's health check: an app that stops answering is taken out and
   requests get the 503 at once (the stall guard's part, see :func:`_stall_checks`).

Where it differs (libs/meshauth/README.md has the list): RS256 only (HAProxy 2.6 has no EdDSA: such a
key is left out, its tokens meet ``unknown_kid``); an ``aud`` list is refused (2.6 reads no JSON
arrays); a head larger than HAProxy's buffer is its own 400 page; keys are those of the last reload.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization

from meshauth.errors import InvalidToken
from meshauth.headers import (
    IDENTITY_HEADER_NAMES,
    IDENTITY_HEADER_PREFIXES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from meshauth.jwks import JWKSCache, VerificationKey
from meshauth.principal import SERVICE_TOKEN_USE, USER_TOKEN_USE
from meshauth.settings import SettingsError, SidecarSettings, inherited_fd
from meshauth.sidecar.logging import ACCESS_LINES, FLUSH_SECONDS
from meshauth.sidecar.metrics import SidecarMetrics
from meshauth.sidecar.proxy import KNOWN_METHODS
from meshauth.verifier import FORBIDDEN_HEADERS, REQUIRED_CLAIMS
from meshcontract import LIVEZ, PRINCIPAL_HEADER, PROBES, REQUEST_ID_HEADER, REQUEST_ID_PATTERN

__all__ = [
    "ALGORITHMS",
    "SECRET_VARIABLE",
    "AccessLines",
    "DataPlane",
    "Key",
    "find_haproxy",
    "key_files",
    "secret_environment",
    "write_config",
]

log = logging.getLogger("meshauth.sidecar")

#: The algorithms HAProxy's ``jwt_verify`` checks that meshauth allows (not EdDSA).
ALGORITHMS: Final = frozenset({"RS256"})
#: The environment variable HAProxy reads the principal secret from (base64), never the file.
SECRET_VARIABLE: Final = "MESHAUTH_PRINCIPAL_KEY_BASE64"  # noqa: S105 - a variable's name
# Room in HAProxy's buffer for the headers it adds (the principal payload is at most the token).
_REWRITE_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Key:
    """A verification key as HAProxy reads it: a PEM file, and the one algorithm it verifies."""

    kid: str
    algorithm: str
    pem: Path


def key_files(keys: Mapping[str, VerificationKey], directory: Path) -> list[Key]:
    """Write each key HAProxy can use as a PEM file in ``directory``; the others are left out."""
    directory.mkdir(parents=True, exist_ok=True)
    usable = []
    for index, key in enumerate(sorted(keys.values(), key=lambda k: k.kid)):
        if key.algorithm not in ALGORITHMS:
            continue
        pem = directory / f"key-{index}.pem"  # kids are identity's text: not used as file names
        pem.write_bytes(
            key.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        usable.append(Key(kid=key.kid, algorithm=key.algorithm, pem=pem))
    return usable


def find_haproxy() -> str | None:
    """The haproxy executable: on PATH, or in /usr/sbin where Debian installs it (a non-root PATH
    often lacks it); None when there is none."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")


def secret_environment(settings: SidecarSettings) -> dict[str, str]:
    """The environment HAProxy needs beside its configuration: the principal secret, base64."""
    return {SECRET_VARIABLE: base64.b64encode(settings.principal_secret.encode()).decode("ascii")}


def write_config(
    settings: SidecarSettings,
    keys: Mapping[str, VerificationKey],
    directory: Path,
    *,
    listen: str,
    usable: bool = True,
    log: bool = True,
) -> Path:
    """Write the HAProxy configuration for ``settings`` and identity's ``keys`` (with the key and
    error files it names) into ``directory``, serving on ``listen`` (an HAProxy bind address);
    return its path. Without ``usable`` keys (none fetched yet, or too stale) a token gets the
    sidecar's 503 ``jwks_unavailable``: it may be fine."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "haproxy.cfg"
    text = _config(
        settings, key_files(keys, directory), _error_files(directory), listen=listen, usable=usable, log=log
    )
    # Written whole, then renamed: a reload never reads half a file.
    staging = directory / "haproxy.cfg.new"
    staging.write_text(text)
    staging.replace(path)
    return path


def _config(
    settings: SidecarSettings, keys: list[Key], errors: list[str], *, listen: str, usable: bool, log: bool
) -> str:
    leeway = int(settings.leeway)
    # HAProxy reads a request head whole into one buffer, and refuses (400, its own page) one that
    # does not fit before any rule runs. Room for the sidecar's limit, an oversized token on top (a
    # 401 too_large, as from the sidecar), and the headers added here (the principal: at most the
    # token's size).
    rewrite = settings.max_token_bytes + _REWRITE_BYTES
    buffer = settings.max_header_bytes + settings.max_token_bytes + rewrite
    request_id = REQUEST_ID_HEADER
    rules = [
        # Probes are not logged (nor counted in the metrics), as by the Python sidecar.
        f"http-request set-log-level silent if {{ path -m str -- {' '.join(PROBES)} }}",
        *_strip_identity_headers(),
        # The request id first: every answer below carries it.
        f"http-request set-header {request_id} %[unique-id] unless {{ req.hdr_cnt({request_id}) eq 1 }}"
        f" {{ req.fhdr({request_id}) -m reg ^{REQUEST_ID_PATTERN}$ }}",
        f"http-request set-var(txn.request_id) req.fhdr({request_id})",
        "http-request set-var(txn.path) path,json(utf8s)",
        "http-request set-var(txn.user_agent) req.fhdr(user-agent),json(utf8s)",
        *_target_rules(settings.max_url_bytes),
        _refuse(
            431,
            "too_many_headers",
            f"Send at most {settings.max_headers} header fields.",
            f"{{ req.hdr_cnt gt {settings.max_headers} }}",
        ),
        _refuse(
            431,
            "headers_too_large",
            "Request headers are too large.",
            f"{{ req.hdrs,length gt {settings.max_header_bytes} }}"
            f" !{{ req.fhdr(authorization),length gt {settings.max_token_bytes} }}",
        ),
        _refuse(
            413,
            "body_too_large",
            "The request body is too large.",
            f"{{ req.hdr_val(content-length) gt {settings.max_body_bytes} }}",
        ),
    ]
    # The auth decision, for the access line and the metrics: anonymous (no Authorization) unless the
    # path is public (no decision, as in the Python sidecar); accepted once every check passed.
    rules.append("http-request set-var(txn.auth) str(anonymous) unless { req.hdr_cnt(authorization) gt 0 }")
    public = _public_acl(settings.public_paths)
    if public:
        rules.append(f"http-request unset-var(txn.auth) if {public}")
        rules.append(f"http-request del-header Authorization if {public}")
    rules += _token_rules(settings, keys, leeway, usable)
    rules += _forwarding_rules(settings)

    upstream = settings.upstream_socket or settings.upstream.removeprefix("http://")
    lines = [
        "global",
        "  nbthread 1",
        "  maxconn 4096",
        f"  tune.bufsize {buffer}",
        f"  tune.maxrewrite {rewrite}",
        # HAProxy refuses a head with more fields than this itself (a 400 page, before any rule): room
        # for the JSON 431 above the sidecar's limit, as the Python sidecar answers it.
        f"  tune.http.maxhdr {min(32_767, 4 * settings.max_headers + 10)}",
        f'  set-var proc.principal_key str("${{{SECRET_VARIABLE}}}")',
        *(["  log stdout format raw local0"] if log else []),
        "",
        "defaults",
        "  mode http",
        *(["  log global"] if log else []),
        "  option http-keep-alive",
        "  option dontlognull",
        "  http-reuse always",
        "  timeout connect 5s",
        f"  timeout client {_ms(settings.body_timeout)}",
        f"  timeout http-request {_ms(settings.body_timeout)}",
        f"  timeout server {_ms(settings.upstream_timeout)}",
        "  timeout http-keep-alive 75s",
        *errors,
        "",
        "frontend sidecar",
        f"  bind {listen}",
        "  unique-id-format %[uuid,regsub(-,,g)]",  # 32 hex digits, as the sidecar's
        f"  log-format '{_ACCESS_LINE}'",
        *(f"  {rule}" for rule in rules),
        f"  http-response set-header {request_id} %[var(txn.request_id)]"
        f" unless {{ res.hdr_cnt({request_id}) gt 0 }}",
        # A refusal's reason, from the header the refusing rule set, into the access line (then off
        # the answer); a token's refusal is the auth decision "rejected". The app's answers cannot
        # pose as refusals: the header is removed from them first.
        f"  http-response del-header {_REASON_HEADER}",
        f"  http-after-response set-var(txn.reason) res.hdr({_REASON_HEADER})"
        f" if {{ res.hdr_cnt({_REASON_HEADER}) gt 0 }}",
        f"  http-after-response set-var(txn.auth) str(rejected) if {{ res.hdr_cnt({_REASON_HEADER}) gt 0 }}"
        f" {{ status 401 }} || {{ res.hdr({_REASON_HEADER}) -m str jwks_unavailable }}",
        f"  http-after-response del-header {_REASON_HEADER}",
        "  default_backend app",
        "",
        f"backend {_TOKENS}",
        f"  stick-table type binary len 32 size {REMEMBER_TOKENS} expire {REMEMBER_SECONDS}s store gpt0",
        "",
        "backend app",
        # A pooled connection the app closed or reset before answering (a worker stopping, recycled,
        # killed, or its keep-alive running out as the request left) is tried once more on a fresh
        # one when that is safe, as meshauth.sidecar.proxy does: no body, or an Idempotency-Key.
        "  option http-buffer-request",  # the body is read before the app is asked (and kept for a retry)
        "  retries 1",
        "  retry-on conn-failure empty-response",
        *(
            f"  http-request disable-l7-retry if {body} !{{ req.hdr_cnt(idempotency-key) gt 0 }}"
            for body in _BODY
        ),
        *_stall_checks(settings),
        f"  server app {upstream} maxconn {settings.upstream_connections}{_stall_server(settings)}",
        "",
    ]
    return "\n".join(lines)


def _stall_checks(settings: SidecarSettings) -> list[str]:
    # meshauth.sidecar.stall's question, asked by HAProxy: does the app answer its liveness path at
    # all (any status) within MESHAUTH_HTTP_TIMEOUT? Twice no: it is taken out, and requests get the
    # 503 at once (probes included, so a kubelet sees it) until it answers again.
    if settings.stall_timeout <= 0:
        return []
    return [
        "  option httpchk",
        f"  http-check send meth GET uri {LIVEZ} ver HTTP/1.1 hdr Host localhost",
        "  http-check expect rstatus ^[1-5]",
        f"  timeout check {_ms(settings.http_timeout)}",
    ]


def _stall_server(settings: SidecarSettings) -> str:
    # Asked every MESHAUTH_SIDECAR_STALL_TIMEOUT seconds; after a failed answer, and while it is out,
    # every second.
    if settings.stall_timeout <= 0:
        return ""
    return f" check inter {_ms(settings.stall_timeout)} fastinter 1s downinter 1s fall 2 rise 1"


# The sidecar's access line (meshauth.sidecar.logging), field for field.
_ACCESS_LINE: Final = (
    '{"time":"%[date,utime(%Y-%m-%dT%H:%M:%SZ)]","level":"INFO","logger":"meshauth.sidecar.access",'
    '"message":"%HM %[var(txn.path)] %ST","method":"%HM","path":"%[var(txn.path)]","status":%ST,'
    '"duration_ms":%Ta,"request_id":"%[var(txn.request_id)]","remote_addr":"%ci",'
    '"user_agent":"%[var(txn.user_agent)]","auth":"%[var(txn.auth)]","reason":"%[var(txn.reason)]",'
    '"termination":"%tsc"}'
)
# Set on HAProxy's own refusals for http-after-response to log; never reaches the client.
_REASON_HEADER: Final = "X-Meshauth-Reason"


def _refuse(
    status: int, reason: str, detail: str, condition: str, *, headers: Mapping[str, str] | None = None
) -> str:
    extra = "".join(f" hdr {name} '{value}'" for name, value in (headers or {}).items())
    return (
        f"http-request return status {status} content-type application/json string {_body(reason, detail)}"
        f" hdr {REQUEST_ID_HEADER} %[var(txn.request_id)] hdr {_REASON_HEADER} {reason}{extra} if {condition}"
    )


def _denial(reason: str, condition: str, detail: str | None = None) -> str:
    challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return _refuse(401, reason, detail or InvalidToken(reason).detail, condition, headers=challenge)  # type: ignore[arg-type]


def _body(reason: str, detail: str) -> str:
    # The sidecar's body (meshauth.sidecar.protocol.error_answer), as one double-quoted argument.
    text = json.dumps({"detail": detail, "reason": reason})
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _strip_identity_headers() -> list[str]:
    # Header names match case-insensitively; "_" and "-" are the same to the app (WSGI's META).
    def pattern(text: str) -> str:
        return re.escape(text).replace("\\-", "-").replace("-", "[-_]")

    prefixes = "|".join(pattern(prefix) for prefix in IDENTITY_HEADER_PREFIXES)
    names = "|".join(pattern(name) for name in sorted(IDENTITY_HEADER_NAMES))
    return [f"http-request del-header ^(({prefixes}).*|({names}))$ -m reg"]


def _target_rules(max_url_bytes: int) -> list[str]:
    # meshauth.sidecar.target: origin-form only, no fragment, no dot segment (decoded), a length cap.
    one_slash = "The request target must be a path starting with one '/'."
    return [
        _refuse(
            414,
            "uri_too_long",
            f"The request target is longer than {max_url_bytes} bytes.",
            f"{{ url,length gt {max_url_bytes} }}",
        ),
        _refuse(400, "bad_request_target", one_slash, "!{ url_beg / } || { url_beg // }"),
        _refuse(400, "bad_request_target", "A request target cannot carry a fragment.", "{ url_sub '#' }"),
        _refuse(
            400,
            "path_not_normalized",
            "The path must not contain '.' or '..' segments.",
            "{ path,url_dec -m reg (^|/)\\.\\.?(/|$) }",
        ),
    ]


def _public_acl(paths: Iterable[str]) -> str:
    exact = [path for path in paths if not path.endswith("/")]
    prefixes = [path for path in paths if path.endswith("/")]
    terms = []
    if exact:
        terms.append(f"{{ path -m str -- {' '.join(exact)} }}")
    if prefixes:
        terms.append(f"{{ path -m beg -- {' '.join(prefixes)} }}")
    return " || ".join(terms)


# A request that carries a body: either condition.
_BODY: Final = ("{ req.hdr_val(content-length) gt 0 }", "{ req.hdr_cnt(transfer-encoding) gt 0 }")
# A token is present (set once the Authorization value has been read).
_TOKEN: Final = "{ var(txn.token) -m found }"  # noqa: S105 - an ACL
# A token not verified before: the checks run in full. One accepted in the last minute is remembered
# by the SHA-256 of all of it (any change to header, claims or signature is another token), with
# its expiry, which is checked on every request; a reload (identity's keys changed) forgets all.
_NEW: Final = "{ var(txn.token) -m found } !{ var(txn.known) -m int gt 0 }"
_TOKENS: Final = "verified_tokens"
#: How long an accepted token is remembered, and how many.
REMEMBER_SECONDS: Final = 60
REMEMBER_TOKENS: Final = 10_000


def _token_rules(settings: SidecarSettings, keys: list[Key], leeway: int, usable: bool) -> list[str]:
    return [
        *_authorization_rules(settings),
        f"http-request set-var(txn.digest) var(txn.token),sha2(256) if {_TOKEN}",
        f"http-request set-var(txn.known) var(txn.digest),table_gpt0({_TOKENS}) if {_TOKEN}",
        "http-request set-var(txn.exp) var(txn.known) if { var(txn.known) -m int gt 0 }",
        *_header_rules(settings.algorithms),
        *_key_rules(keys, usable),
        *_claim_rules(settings, leeway),
        *_principal_rules(),
    ]


def _authorization_rules(settings: SidecarSettings) -> list[str]:
    # meshauth.headers.bearer_token: one value, Bearer, no comma (two values a server joined).
    one = "Send exactly one Authorization header."
    found = "{ var(txn.authorization) -m found }"
    bearer = "{ var(txn.authorization) -i -m reg ^[[:space:]]*bearer([[:space:]]|$) }"
    return [
        "http-request set-var(txn.authorization) req.fhdr(authorization)"
        " if { req.hdr_cnt(authorization) gt 0 }",
        _denial("malformed", "{ req.hdr_cnt(authorization) gt 1 }", one),
        _denial("malformed", "{ var(txn.authorization) -m sub , }", one),
        _denial("malformed", f"{found} !{bearer}", "Only Bearer authorization is accepted."),
        # The token: the value without its scheme and surrounding space.
        "http-request set-var(txn.token) var(txn.authorization)"
        f",regsub(^[[:space:]]*[^[:space:]]+[[:space:]]*,),regsub([[:space:]]+$,) if {found}",
        _denial("missing", f"{found} !{{ var(txn.token),length gt 0 }}"),
        _denial("too_large", f"{{ var(txn.token),length gt {settings.max_token_bytes} }}"),
    ]


def _header_rules(allowed: Iterable[str]) -> list[str]:
    # meshauth.verifier: three segments, a JSON object header, an allowed algorithm, no crit, no key
    # reference, a key id. (The header's names are found in its text: one escaped inside a name
    # would pass here, harmlessly, since HAProxy honours none of them and checks the signature.)
    segment = "[A-Za-z0-9_-]"
    three = f"^{segment}+\\.{segment}+\\.{segment}*$"
    references = "|".join(sorted(FORBIDDEN_HEADERS))
    # The algorithms meshauth is configured to accept, as the verifier refuses others; a key of one
    # HAProxy cannot verify is left out of the configuration, so its tokens meet unknown_kid.
    algorithms = " ".join(_acl_word(algorithm) for algorithm in sorted(allowed))
    return [
        _denial(
            "malformed",
            f"{_NEW} !{{ var(txn.token) -m reg {three} }}",
            "A token has three dot-separated segments.",
        ),
        f"http-request set-var(txn.header) var(txn.token),field(1,.),ub64dec if {_NEW}",
        _denial(
            "malformed",
            f"{_NEW} !{{ var(txn.header) -m reg ^[[:space:]]*\\{{.*\\}}[[:space:]]*$ }}",
            "The token header is not base64url-encoded JSON.",
        ),
        f"http-request set-var(txn.alg) var(txn.token),jwt_header_query('$.alg') if {_NEW}",
        _denial("disallowed_alg", f"{_NEW} !{{ var(txn.alg) -m str -- {algorithms} }}"),
        _denial(
            "bad_header",
            f"{_NEW} {{ var(txn.header) -m reg '\"crit\"[[:space:]]*:' }}",
            "Critical header extensions are not supported.",
        ),
        _denial(
            "bad_header",
            f"{_NEW} {{ var(txn.header) -m reg '\"({references})\"[[:space:]]*:' }}",
            "Key references in the token header are not accepted.",
        ),
        f"http-request set-var(txn.kid) var(txn.token),jwt_header_query('$.kid') if {_NEW}",
        _denial("bad_header", f"{_NEW} !{{ var(txn.kid),length gt 0 }}", "The token header has no key id."),
    ]


def _key_rules(keys: list[Key], usable: bool) -> list[str]:
    rules = []
    if not usable:
        unavailable = InvalidToken("jwks_unavailable").detail
        rules.append(_refuse(503, "jwks_unavailable", unavailable, _TOKEN, headers={"Retry-After": "5"}))
    known = " ".join(_acl_word(key.kid) for key in keys)
    rules.append(_denial("unknown_kid", f"{_NEW} !{{ var(txn.kid) -m str -- {known} }}" if keys else _TOKEN))
    for key in keys:
        this = f"{_NEW} {{ var(txn.kid) -m str -- {_acl_word(key.kid)} }}"
        verified = f'var(txn.token),jwt_verify("{key.algorithm}","{_acl_word(str(key.pem))}") -m int 1'
        rules += [
            _denial(
                "disallowed_alg",
                f"{this} !{{ var(txn.alg) -m str -- {key.algorithm} }}",
                "The token's algorithm does not match its key.",
            ),
            _denial("bad_signature", f"{this} !{{ {verified} }}"),
        ]
    return rules


def _claim_rules(settings: SidecarSettings, leeway: int) -> list[str]:
    # PyJWT's checks in its order (required claims, iat, nbf, exp, iss, aud), then the principal's
    # (meshauth.principal: token_use names an access or a service token).
    rules = [
        f"http-request set-var(txn.{claim}) var(txn.token),jwt_payload_query('$.{claim}'{output}) if {_NEW}"
        for claim, output in (
            ("exp", ",'int'"),
            ("iat", ",'int'"),
            ("nbf", ",'int'"),
            ("iss", ""),
            ("aud", ""),
            ("token_use", ""),
        )
    ]
    rules += [
        "http-request set-var(txn.sub) var(txn.token),jwt_payload_query('$.sub') if " + _TOKEN,
        *(
            _denial(
                "missing_claim",
                f"{_NEW} !{{ var(txn.{claim}) -m found }}",
                f"The access token lacks the `{claim}` claim.",
            )
            for claim in REQUIRED_CLAIMS
        ),
    ]
    audiences = " ".join(_acl_word(audience) for audience in settings.audience)
    uses = f"{_acl_word(USER_TOKEN_USE)} {_acl_word(SERVICE_TOKEN_USE)}"
    lacks_use = "The access token lacks the `token_use` claim."
    return [
        *rules,
        "http-request set-var(txn.now) date",
        # Seconds into the future (iat, nbf) or past (exp), against the leeway.
        _denial("not_yet_valid", f"{_NEW} {{ var(txn.iat),sub(txn.now) -m int gt {leeway} }}"),
        _denial(
            "not_yet_valid",
            f"{_NEW} {{ var(txn.nbf) -m found }} {{ var(txn.nbf),sub(txn.now) -m int gt {leeway} }}",
        ),
        _denial("expired", f"{_TOKEN} {{ var(txn.now),sub(txn.exp) -m int ge {leeway} }}"),
        _denial("wrong_issuer", f"{_NEW} !{{ var(txn.iss) -m str -- {_acl_word(settings.issuer)} }}"),
        _denial("wrong_audience", f"{_NEW} !{{ var(txn.aud) -m str -- {audiences} }}"),
        _denial("missing_claim", f"{_NEW} !{{ var(txn.token_use) -m found }}", lacks_use),
        _denial(
            "malformed",
            f"{_NEW} !{{ var(txn.token_use) -m str -- {uses} }}",
            "The token is not an access token.",
        ),
        f"http-request set-var(txn.auth) str(accepted) if {_TOKEN}",
        # Verified: remembered, with its expiry (see _NEW).
        f"http-request track-sc0 var(txn.digest) table {_TOKENS} if {_NEW}",
        f"http-request sc-set-gpt0(0) var(txn.exp) if {_NEW}",
    ]


def _principal_rules() -> list[str]:
    # meshauth.headers, v1: the payload is the token's own (base64url JSON of the verified claims),
    # signed with the time. The verified token travels on, as from the Python sidecar; no other does.
    signature = "v1=%[var(txn.signed),hmac(sha256,proc.principal_key),hex,lower]"
    return [
        f"http-request set-var(txn.payload) var(txn.token),field(2,.) if {_TOKEN}",
        'http-request set-var(txn.signed) str(),concat("v1\\n",txn.now,"\\n"),concat(,txn.payload,)'
        f" if {_TOKEN}",
        f"http-request set-header {PRINCIPAL_HEADER} %[var(txn.payload)] if {_TOKEN}",
        f"http-request set-header {TIMESTAMP_HEADER} %[var(txn.now)] if {_TOKEN}",
        f"http-request set-header {SIGNATURE_HEADER} {signature} if {_TOKEN}",
        f"http-request del-header Authorization unless {_TOKEN}",
    ]


def _forwarding_rules(settings: SidecarSettings) -> list[str]:
    rules = [
        "http-request set-var(txn.proto) str(http)",
    ]
    if settings.trusted_proxies:
        networks = " ".join(str(network) for network in settings.trusted_proxies)
        rules.append(
            f"http-request set-var(txn.proto) req.fhdr(x-forwarded-proto),lower "
            f"if {{ src {networks} }} {{ req.fhdr(x-forwarded-proto),lower -m str http https }}"
        )
    rules += [
        "http-request del-header X-Forwarded-Proto",
        "http-request del-header X-Forwarded-Protocol",
        "http-request del-header X-Forwarded-Ssl",
        "http-request set-header X-Forwarded-Proto %[var(txn.proto)]",
        "option forwardfor",
    ]
    return rules


# HAProxy's own refusals (a request it cannot read, an app it cannot reach), in the sidecar's JSON
# (an app that cannot be reached or does not answer: as meshauth.sidecar.proxy words it).
_UPSTREAM: Final = "The service is unavailable, retry shortly."
_ERRORS: Final = {
    400: ("Bad Request", "bad_request", "The request could not be read."),
    408: ("Request Timeout", "request_timeout", "The request took too long to arrive."),
    500: ("Internal Server Error", "internal_error", "The proxy failed."),
    502: ("Bad Gateway", "upstream_unavailable", _UPSTREAM),
    503: ("Service Unavailable", "upstream_unavailable", _UPSTREAM),
    504: ("Gateway Timeout", "upstream_unavailable", _UPSTREAM),
}


def _error_files(directory: Path) -> list[str]:
    lines = []
    for status, (phrase, reason, detail) in _ERRORS.items():
        body = json.dumps({"detail": detail, "reason": reason}).encode()
        retry = "Retry-After: 5\r\n" if status == 503 else ""
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n{retry}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        path = directory / f"{status}.http"
        path.write_bytes(head.encode() + body)
        lines.append(f"  errorfile {status} {_acl_word(str(path))}")
    return lines


def _ms(seconds: float) -> str:
    # HAProxy's timeouts in milliseconds (a fraction of a second stays one); 0 would mean none.
    return f"{max(1, round(seconds * 1000))}ms"


def _end_with_parent() -> None:
    # In the child before HAProxy starts: it gets SIGTERM when the sidecar process ends, however it
    # ends (a SIGKILL included), instead of serving on with keys nobody refreshes.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


_PR_SET_PDEATHSIG: Final = 1
_PIPE_BYTES: Final = 1 << 20


def _acl_word(text: str) -> str:
    # A value as one word of an ACL: identity's kids, issuers and audiences are URLs and tokens of
    # printable ASCII; anything with a space or quote would split the rule, so it is refused.
    if not text or not text.isprintable() or any(c in text for c in " \t'\"\\#"):
        raise ValueError(f"{text!r} cannot be written into an HAProxy rule")
    return text


# What an access line's termination state (HAProxy's %tsc: who ended the stream, in which phase) says
# of an answer the app did not give, as the Python sidecar's upstream error kinds.
_UPSTREAM_KINDS: Final = {
    "SC": "connect",  # refused (nothing listens)
    "sC": "connect",  # no connection within `timeout connect`
    "sQ": "timeout",  # queued for a free connection (maxconn) too long
    "SH": "disconnected",  # closed or reset before an answer (after the retry, if one was allowed)
    "sH": "timeout",  # no answer within `timeout server`
    "PH": "read",  # an answer that is not valid HTTP
    "SD": "stream",  # cut off in the middle of its body
    "sD": "stream",
}
# An unfinished line longer than this is not an access line: dropped rather than held.
_MAX_LINE: Final = 1 << 20


class AccessLines:
    """HAProxy's access lines (its stdout, a pipe): written on to the sidecar's stdout and counted in
    the sidecar's metrics, as the Python engine counts its requests: the request durations, the auth
    decisions, the refusals and the upstream errors, under the same names and labels (the charts'
    dashboards and SLO alerts read them whichever engine serves)."""

    def __init__(self, metrics: SidecarMetrics, *, echo: bool) -> None:
        self.metrics = metrics
        self.echo = echo
        self._rest = b""

    def feed(self, data: bytes) -> None:
        """Take what HAProxy wrote since the last call: every complete line is written and counted."""
        data = self._rest + data
        end = data.rfind(b"\n") + 1
        self._rest = data[end:] if len(data) - end <= _MAX_LINE else b""
        if not end:
            return
        text = data[:end].decode("utf-8", "replace")
        if self.echo:
            ACCESS_LINES.add(text)
            ACCESS_LINES.flush()
        for line in text.splitlines():
            self.count(line)

    def count(self, line: str) -> None:
        """Count the request of one access line (anything else is ignored)."""
        try:
            entry = json.loads(line)
            status, method = int(entry["status"]), str(entry["method"])
            seconds = max(0, int(entry["duration_ms"])) / 1000
            auth, reason, termination = entry["auth"], entry["reason"], str(entry["termination"])
        except (ValueError, TypeError, KeyError):
            return
        metrics = self.metrics
        metrics.observe_request(method if method in KNOWN_METHODS else "_OTHER", status, seconds)
        refused = reason not in ("", "-")  # HAProxy writes an empty value as "-"
        if auth == "rejected":
            metrics.auth.decision("rejected", reason)
        elif auth in ("accepted", "anonymous"):
            metrics.auth.decision(auth)
        if refused:
            if auth != "rejected":  # the request itself (size, limits, request target)
                metrics.rejected_requests.labels(reason).inc()
        elif status in (400, 408) and termination[1:2] == "R":
            # HAProxy's own refusal of a request it could not read whole (its error file's reason).
            metrics.rejected_requests.labels(_ERRORS[status][1]).inc()
        else:
            kind = _UPSTREAM_KINDS.get(termination[:2])
            if kind is not None:
                metrics.upstream_errors.labels(kind).inc()


class DataPlane:
    """HAProxy serving the sidecar's port, configured from here and reloaded when identity's keys
    change (``MESHAUTH_SIDECAR_ENGINE=haproxy``). The sidecar process keeps the rest: the JWKS (its
    refresher and shared cache file), the metrics (counted from HAProxy's access lines, see
    :class:`AccessLines`) and their listener, signals."""

    def __init__(
        self,
        config: SidecarSettings,
        jwks: JWKSCache,
        metrics: SidecarMetrics,
        directory: Path | None = None,
    ) -> None:
        if config.upstream.startswith("https://"):
            raise SettingsError(
                "MESHAUTH_SIDECAR_ENGINE=haproxy reaches the app over plain HTTP or a unix socket."
            )
        self.config = config
        self.jwks = jwks
        self.metrics = metrics
        self.executable = find_haproxy() or "haproxy"
        self._environment = {**os.environ, **secret_environment(config)}
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="meshauth-haproxy-"))
        self.process: asyncio.subprocess.Process | None = None
        self._state: tuple[int, bool] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._pipe: int | None = None
        self._reader: asyncio.Task[None] | None = None
        fd = inherited_fd(config.listen)
        host, port = config.listen
        self._fds = (fd,) if fd is not None else ()
        self.bind = f"fd@{fd}" if fd is not None else f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        """Write the configuration, start HAProxy, and return once it accepts connections."""
        self._write()
        problem = await self._check()
        if problem:
            raise RuntimeError(f"HAProxy refuses the configuration written for it: {problem}")
        # HAProxy's access lines come through a pipe, read here; a larger pipe than the default 64 kB
        # holds a second of lines on a busy pod (HAProxy drops a line it cannot write at once).
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # a smaller maximum (fs.pipe-max-size): the default stays
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(read_end, False)
        self._pipe = read_end
        try:
            # -W: a master process that reloads workers on SIGUSR2; -db: in the foreground.
            self.process = await asyncio.create_subprocess_exec(
                self.executable,
                "-W",
                "-db",
                "-f",
                str(self.directory / "haproxy.cfg"),
                env=self._environment,
                stdout=write_end,
                pass_fds=self._fds,
                preexec_fn=_end_with_parent,
            )
        finally:
            os.close(write_end)  # HAProxy holds it now: the pipe ends when HAProxy does
        echo = logging.getLogger("meshauth.sidecar.access").isEnabledFor(logging.INFO)
        self._reader = asyncio.create_task(self._read_lines(AccessLines(self.metrics, echo=echo)))
        await self._until_listening()
        self._follower = asyncio.create_task(self._follow_keys())
        log.info("HAProxy %s serving %s", self.process.pid, self.bind)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), then end HAProxy."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGUSR1)  # soft stop: unbind, finish, close idle connections
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            # The last lines HAProxy wrote (its end of the pipe closes when it has ended).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2 * FLUSH_SECONDS + 1)
            self._reader.cancel()
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _usable(self) -> bool:
        age = self.jwks.age()
        return age is not None and age <= self.jwks.max_staleness

    def _write(self) -> None:
        usable = self._usable()
        self._state = (self.jwks.generation, usable)
        keys = self.jwks.keys() if usable else {}
        write_config(self.config, keys, self.directory, listen=self.bind, usable=usable)

    async def _check(self) -> str:
        """HAProxy's own verdict on the configuration file: "" when it loads."""
        check = await asyncio.create_subprocess_exec(
            self.executable,
            "-c",
            "-q",
            "-f",
            str(self.directory / "haproxy.cfg"),
            env=self._environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await check.communicate()
        return "" if check.returncode == 0 else output.decode(errors="replace").strip()

    async def _follow_keys(self) -> None:
        # The sidecar's refresher fetches the JWKS; a changed key set (or keys turning too stale to
        # use, or usable again) is a new configuration, which the master loads without dropping a
        # connection.
        while True:
            await asyncio.sleep(1.0)
            if (self.jwks.generation, self._usable()) == self._state:
                continue
            self._write()
            problem = await self._check()
            if problem:
                # The workers keep the configuration they run; the next change tries again.
                log.error("HAProxy refuses its new configuration, keeping the old one: %s", problem)
            elif self.process is not None and self.process.returncode is None:
                usable = "usable" if self._usable() else "missing or too stale to use"
                log.info("identity's keys changed (%s): reloading HAProxy", usable)
                self.process.send_signal(signal.SIGUSR2)

    async def _read_lines(self, lines: AccessLines) -> None:
        # Read in batches, every FLUSH_SECONDS (as the Python engine writes its lines): a wakeup per
        # line would cost the sidecar process more than the counting.
        assert self._pipe is not None  # noqa: S101
        while True:
            try:
                data = os.read(self._pipe, _PIPE_BYTES)
            except BlockingIOError:
                await asyncio.sleep(FLUSH_SECONDS)
                continue
            if not data:  # HAProxy has ended
                return
            lines.feed(data)

    async def _until_listening(self, timeout: float = 15.0) -> None:
        assert self.process is not None  # noqa: S101
        host, port = ("127.0.0.1", 0) if self._fds else self.config.listen
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"HAProxy exited with {self.process.returncode} at start")
            if self._fds:
                await asyncio.sleep(0.2)  # an inherited socket listens already; give the worker a moment
                return
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(
                    "127.0.0.1" if host in ("0.0.0.0", "") else host,  # noqa: S104 - a wildcard is not dialled
                    port,
                )
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"HAProxy did not listen on {self.bind} within {timeout:.0f} s")
