"""Failed-login limits per account and per client address, shared by every worker and pod.

Only failures count: a script logging in many users from one address is never slowed down, while
guessing passwords for one account stops after a handful of tries.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Min
from django.utils import timezone

from identity.tokens.models import LoginFailure


@dataclass(frozen=True)
class Limit:
    prefix: str
    attempts: int
    window: datetime.timedelta


def _limits() -> tuple[Limit, Limit]:
    window = datetime.timedelta(seconds=settings.IDENTITY_LOGIN_WINDOW)
    return (
        Limit("account", settings.IDENTITY_LOGIN_ACCOUNT_ATTEMPTS, window),
        Limit("address", settings.IDENTITY_LOGIN_ADDRESS_ATTEMPTS, window),
    )


def _keys(email: str, address: str) -> list[tuple[Limit, str]]:
    account, per_address = _limits()
    return [(account, f"account:{email.strip().lower()}"), (per_address, f"address:{address}")]


def retry_after(email: str, address: str) -> int | None:
    """Seconds until another attempt is allowed, or None when the caller is within budget."""
    now = timezone.now()
    waits: list[float] = []
    for limit, key in _keys(email, address):
        recent = LoginFailure.objects.filter(key=key, at__gt=now - limit.window)
        stats = recent.aggregate(oldest=Min("at"))
        if stats["oldest"] is not None and recent.count() >= limit.attempts:
            waits.append((stats["oldest"] + limit.window - now).total_seconds())
    return max(1, math.ceil(max(waits))) if waits else None


def record_failure(email: str, address: str) -> None:
    now = timezone.now()
    LoginFailure.objects.bulk_create([LoginFailure(key=key, at=now) for _, key in _keys(email, address)])
    # Old rows only cost space; trim them as we go instead of needing a cron job.
    horizon = now - max(limit.window for limit in _limits())
    LoginFailure.objects.filter(at__lt=horizon).delete()


def clear_account(email: str) -> None:
    """A successful login forgives the account's earlier failures (not the address's)."""
    LoginFailure.objects.filter(key=f"account:{email.strip().lower()}").delete()
