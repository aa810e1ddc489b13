"""Days and hours as a workspace's time zone cuts them, and how a data series writes them.

Everything is computed on absolute (UTC) instants and only converted to the zone to read a
local date or to write a time: arithmetic on datetimes of one ZoneInfo is wall-clock
arithmetic, which goes wrong across DST changes. A local day lasts 23, 24 or 25 hours; its
hours are its first instant plus whole hours, so zones with :30 offsets come out right.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from exporter.simulator.kinds import Unit

UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
_DAY = datetime.timedelta(days=1)
TIME_FORMATS = ("date", "datetime", "naive")


@dataclass(frozen=True)
class Period:
    key: datetime.date | datetime.datetime  # a local date, or an hour's start in the zone
    start: datetime.datetime  # UTC, inclusive
    end: datetime.datetime  # UTC, exclusive

    def elapsed(self, now: datetime.datetime) -> float:
        """The share of the period gone by at `now`: 0 before it, 1 from its end on."""
        share = (now - self.start) / (self.end - self.start)
        return min(1.0, max(0.0, share))


def day_start(zone: ZoneInfo, day: datetime.date) -> datetime.datetime:
    """The first instant of `day` in `zone`, in UTC: its midnight or, if a DST gap skips
    midnight, the end of that gap."""
    midnight = datetime.datetime.combine(day, datetime.time(), tzinfo=zone)
    first = midnight.astimezone(UTC)  # fold=0: the offset before any transition
    second = midnight.replace(fold=1).astimezone(UTC)
    if second >= first:  # midnight exists (twice at a fall-back: the first one counts)
        return first
    # In a gap, `second` is still the day before and `first` already `day`: the day begins
    # at the transition between them. Transitions fall on whole seconds.
    before, after = int(second.timestamp()), int(first.timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.datetime.fromtimestamp(middle, zone).date() >= day:
            after = middle
        else:
            before = middle
    return datetime.datetime.fromtimestamp(after, UTC)


def local_date(zone: ZoneInfo, instant: datetime.datetime) -> datetime.date:
    return instant.astimezone(zone).date()


def day_period(zone: ZoneInfo, day: datetime.date) -> Period:
    return Period(day, day_start(zone, day), day_start(zone, day + _DAY))


def hours_of_day(zone: ZoneInfo, day: datetime.date) -> list[datetime.datetime]:
    """The starts of the hours of `day` (23, 24 or 25 of them), aware, in `zone`."""
    period = day_period(zone, day)
    count = math.ceil((period.end - period.start) / HOUR)
    return [(period.start + k * HOUR).astimezone(zone) for k in range(count)]


def hour_containing(zone: ZoneInfo, instant: datetime.datetime) -> datetime.datetime:
    """The start of the local hour that contains `instant`, aware, in `zone`."""
    moment = instant.astimezone(UTC)
    start = day_start(zone, local_date(zone, moment))
    return (start + (moment - start) // HOUR * HOUR).astimezone(zone)


def is_hour_start(zone: ZoneInfo, instant: datetime.datetime) -> bool:
    # Compared in UTC: two datetimes of one zone compare by wall clock, ignoring the fold.
    return hour_containing(zone, instant).astimezone(UTC) == instant.astimezone(UTC)


def hour_period(zone: ZoneInfo, hour: datetime.datetime) -> Period:
    start = hour.astimezone(UTC)
    return Period(hour.astimezone(zone), start, start + HOUR)


def daily_periods(zone: ZoneInfo, last: datetime.date, length: int) -> list[Period]:
    """`length` consecutive local days, oldest first, ending with `last`."""
    return [day_period(zone, last - back * _DAY) for back in reversed(range(length))]


def hourly_periods(zone: ZoneInfo, newest: datetime.datetime, length: int) -> list[Period]:
    """`length` consecutive local hours, oldest first, the last one containing `newest`."""
    hours = [hour_containing(zone, newest)]
    while len(hours) < length:
        hours.append(previous_hour(zone, hours[-1]))
    return [hour_period(zone, hour) for hour in reversed(hours)]


def previous_hour(zone: ZoneInfo, hour: datetime.datetime) -> datetime.datetime:
    """The start of the hour before the one starting at `hour`, aware, in `zone`."""
    return hour_containing(zone, hour.astimezone(UTC) - datetime.timedelta(seconds=1))


def format_time(zone: ZoneInfo, unit: Unit, period: Period, time_format: str) -> str:
    """`time` of a point: see BrazeSimulator for the three formats."""
    local_start = period.start.astimezone(zone)
    if unit == "hour":
        if time_format == "naive":  # a fall-back's repeated hour is written twice alike
            return local_start.replace(tzinfo=None).isoformat(timespec="seconds")
        return _with_z(local_start.isoformat(timespec="seconds"))
    if time_format == "datetime":
        return _with_z(local_start.isoformat(timespec="milliseconds"))
    return local_start.date().isoformat()


def _with_z(text: str) -> str:
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text
