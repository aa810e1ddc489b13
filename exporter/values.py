"""Value types shared by the Braze client, the poller and the state store (a floor below them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class KpiPoint:
    """One complete point of a Braze series: the value of the period [start, end).

    `start` and `end` are aware datetimes in UTC, so that they compare as instants (aware
    datetimes sharing a ZoneInfo compare by wall clock, which the repeated hour of a DST
    change would get wrong).
    """

    start: datetime
    end: datetime
    value: int


@dataclass(frozen=True)
class RateLimitInfo:
    """Braze's X-RateLimit-* headers; a header that is absent, empty or garbled is None."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # Unix time
