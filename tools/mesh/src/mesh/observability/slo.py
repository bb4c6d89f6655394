"""The service level objectives every service gets, and the PromQL pieces the rules and dashboards share.

One place for the numbers: the rule generator, the dashboards (burn-rate panels) and the docs read them
from here, so a dashboard never shows a threshold the alerts do not use.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BURN_ALERTS",
    "DEFAULT_SLO",
    "SLO",
    "WINDOWS",
    "BurnAlert",
    "le_matcher",
    "window_seconds",
]


@dataclass(frozen=True)
class SLO:
    """Objectives of one service over a 30-day period."""

    #: Share of requests answered without a server error (5xx). 4xx are the client's, not ours.
    availability: float = 0.999
    #: Share of requests answered within ``latency_threshold`` seconds.
    latency: float = 0.99
    #: A bucket boundary of meshkit's duration histogram (the ratio is read off that bucket).
    latency_threshold: float = 1.0
    #: Below this many requests in an alert's long window, a few errors are noise, not a burnt budget.
    min_requests: int = 100

    @property
    def availability_budget(self) -> float:
        return round(1 - self.availability, 10)

    @property
    def latency_budget(self) -> float:
        return round(1 - self.latency, 10)


DEFAULT_SLO = SLO()


@dataclass(frozen=True)
class BurnAlert:
    """One window pair of the Google SRE workbook's multiwindow, multi-burn-rate alerts."""

    long: str
    short: str
    factor: float
    severity: str


# The SRE workbook's table (chapter 5, "Alerting on SLOs"): 2% of a 30-day budget in an hour and 5% in
# six hours page; 10% in a day and 10% in three days open a ticket. The short window (1/12 of the long
# one) makes the alert stop soon after the burning stops.
BURN_ALERTS = (
    BurnAlert("1h", "5m", 14.4, "critical"),
    BurnAlert("6h", "30m", 6.0, "critical"),
    BurnAlert("1d", "2h", 3.0, "warning"),
    BurnAlert("3d", "6h", 1.0, "warning"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int:
    """``"6h"`` -> 21600."""
    return int(window[:-1]) * _UNITS[window[-1]]


def le_matcher(threshold: float) -> str:
    """A matcher for the ``le`` bucket of ``threshold`` that works before and after Prometheus 3.

    prometheus_client writes ``le="1.0"``; Prometheus 3 normalises it to ``le="1"`` on ingestion.
    """
    text = repr(float(threshold))
    if text.endswith(".0"):
        return f'le=~"{text[:-2]}|{text[:-2]}\\\\.0"'
    return f'le="{text}"'
