"""Failed-login limits per account and per client address, shared by every worker and pod.

Only failures count: a script logging in many users from one address is never slowed down, while
guessing passwords for one account stops after a handful of tries.

Every password check goes through :func:`attempt` (the API's login, the admin's login form, the
client-credentials grant), so no door has a budget of its own. An attempt is counted *before* the
password is checked, under a PostgreSQL advisory lock per key: twelve simultaneous guesses for
one account cannot all read "4 failures so far" and all be checked. A successful check takes
its own row back.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.http import HttpRequest
from django.utils import timezone

from identity.tokens.models import LoginFailure

# The first key of PostgreSQL's two-key advisory locks: keeps ours apart from other users' locks.
_LOCK_NAMESPACE = 0x1D10


@dataclass(frozen=True)
class Limit:
    prefix: str
    attempts: int
    window: datetime.timedelta


class Throttled(Exception):
    """Over budget: the password was not checked. ``wait`` is the Retry-After in seconds."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"too many failed logins; retry in {wait} s")
        self.wait = wait


@dataclass
class Attempt:
    """One counted attempt; call :meth:`succeeded` when the password was right."""

    account_key: str | None
    row_ids: list[int] = field(default_factory=list)

    def succeeded(self) -> None:
        # The attempt was not a failure after all, and a success forgives the account's earlier
        # failures (not the address's: one good password must not reset a guesser's budget).
        LoginFailure.objects.filter(pk__in=self.row_ids).delete()
        if self.account_key is not None:
            LoginFailure.objects.filter(key=self.account_key).delete()


def _limits() -> tuple[Limit, Limit]:
    window = datetime.timedelta(seconds=settings.IDENTITY_LOGIN_WINDOW)
    return (
        Limit("account", settings.IDENTITY_LOGIN_ACCOUNT_ATTEMPTS, window),
        Limit("address", settings.IDENTITY_LOGIN_ADDRESS_ATTEMPTS, window),
    )


def client_address(request: HttpRequest | None) -> str:
    """The caller's address, trusting exactly the proxies we run (the sidecar, an ingress).

    Each trusted hop appends the address it saw to X-Forwarded-For; anything left of those entries
    was written by the client and proves nothing.
    """
    if request is None:
        return "unknown"
    hops = settings.IDENTITY_TRUSTED_PROXY_HOPS
    forwarded = [
        part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()
    ]
    if hops and len(forwarded) >= hops:
        return forwarded[-hops]
    return str(request.META.get("REMOTE_ADDR", "unknown"))


def _lock(keys: list[str]) -> None:
    # Sorted, so two requests needing the same two locks can never wait for each other.
    with connection.cursor() as cursor:
        for key in sorted(keys):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_NAMESPACE, key])


def _wait(limit: Limit, key: str, now: datetime.datetime) -> float | None:
    recent = LoginFailure.objects.filter(key=key, at__gt=now - limit.window)
    stats = recent.aggregate(oldest=Min("at"))
    if stats["oldest"] is not None and recent.count() >= limit.attempts:
        return float((stats["oldest"] + limit.window - now).total_seconds())
    return None


def attempt(account: str | None, request: HttpRequest | None) -> Attempt:
    """Count a password check against the account's and the address's budgets, then allow it.

    Raises :class:`Throttled` (before anything is checked) when either budget is spent. ``account``
    is the normalised login name, or None for checks that only the address limits (a service
    client's secret: a per-client lockout would let anyone switch a service's calls off).
    """
    account_limit, address_limit = _limits()
    keyed = [(address_limit, f"address:{client_address(request)}")]
    if account is not None:
        keyed.insert(0, (account_limit, f"account:{account}"))
    now = timezone.now()
    with transaction.atomic():
        _lock([key for _, key in keyed])
        waits = [wait for limit, key in keyed if (wait := _wait(limit, key, now)) is not None]
        if waits:
            raise Throttled(max(1, math.ceil(max(waits))))
        rows = LoginFailure.objects.bulk_create([LoginFailure(key=key, at=now) for _, key in keyed])
    # Old rows only cost space; trim them as we go instead of needing a cron job.
    horizon = now - max(limit.window for limit in _limits())
    LoginFailure.objects.filter(at__lt=horizon).delete()
    return Attempt(f"account:{account}" if account is not None else None, [row.pk for row in rows])
