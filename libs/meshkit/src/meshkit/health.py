"""Liveness and readiness, answered before host validation so kubelet's pod-IP Host passes.

`/livez` does no I/O: it only says the worker can answer. `/readyz` runs the readiness checks, each a
django-health-check `HealthCheck` whose single hook raises when the dependency is unusable, and
answers 503 with the failing checks so the pod leaves the Service endpoints until it recovers.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

import psycopg2
from django.db import connections
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from meshkit.env import setting

__all__ = ["DatabaseReady", "readiness_checks", "run_readiness"]


def _readyz_timeout() -> float:
    value: float = setting("READYZ_TIMEOUT")
    return value


@dataclasses.dataclass
class DatabaseReady(HealthCheck):  # type: ignore[misc]  # untyped library base
    """The database answers ``SELECT 1`` on a fresh connection within ``READYZ_TIMEOUT`` seconds.

    A fresh connection (not the worker's kept one) tests what a new request would meet, and its
    ``connect_timeout`` and ``statement_timeout`` bound the probe even when the server hangs
    rather than refuses.
    """

    alias: str = "default"

    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=_readyz_timeout())

    def run(self) -> None:
        seconds = _readyz_timeout()
        params = dict(connections[self.alias].get_connection_params())
        # libpq rounds connect_timeout below 2 up to 2 seconds; it is whole seconds.
        params["connect_timeout"] = max(1, int(seconds))
        try:
            conn = psycopg2.connect(**params)
        except psycopg2.Error as exc:
            raise ServiceUnavailable(_first_line(exc)) from exc
        try:
            with conn.cursor() as cursor:
                # SET LOCAL, not a startup option: it ends with the probe's transaction, so a
                # transaction pooler (which refuses startup options) hands on a clean connection.
                cursor.execute("SET LOCAL statement_timeout = %s", [int(seconds * 1000)])
                cursor.execute("SELECT 1")
                cursor.fetchone()
            # End the transaction before closing: a pooler then keeps its server connection.
            conn.rollback()
        except psycopg2.Error as exc:
            raise ServiceUnavailable(_first_line(exc)) from exc
        finally:
            conn.close()

    @property
    def name(self) -> str:
        return f"database:{self.alias}"


def _first_line(exc: Exception) -> str:
    # The first line names the cause (refused, timeout, auth) without leaking the DSN.
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def readiness_checks() -> list[HealthCheck]:
    """The checks `/readyz` runs: one per configured database alias."""
    return [DatabaseReady(alias=alias) for alias in connections]


def run_readiness(checks: Iterable[HealthCheck] | None = None) -> dict[str, str]:
    """Run each check and map its label to ``"ok"`` or the reason it failed."""
    results: dict[str, str] = {}
    for check in readiness_checks() if checks is None else checks:
        name = getattr(check, "name", type(check).__name__)
        try:
            check.run()
        except ServiceUnavailable as exc:
            results[name] = str(exc)
        else:
            results[name] = "ok"
    return results
