"""Braze's `time` values read as periods in the company's time zone, and the newest complete
point of an answer.

A day is cut at local midnight of the workspace's `time_zone`, so it lasts 23, 24 or 25 hours
around DST changes; an hour is an hour of absolute time. A `time` without a UTC offset is read
in the workspace's zone; one with an offset keeps it. A period that has not ended by `now` is
partial (Braze is still counting it) and never chosen: a partial hour of sessions would look
like a collapse. A period that starts after tomorrow (in the workspace's zone) is junk, like
an unreadable entry: no clock skew explains it, so it is not even counted as partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import TypeGuard

from exporter.kpis import Unit
from exporter.values import KpiPoint

_UTC = timezone.utc
_MIDNIGHT = time(0, 0)


def period_of(value: object, unit: Unit, zone: tzinfo) -> tuple[datetime, datetime] | None:
    """The [start, end) in UTC of the period a Braze `time` value names; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return _period(value.strip(), unit, zone)
    except (ValueError, OverflowError):  # unreadable, or at the edge of datetime's range
        return None


def _period(text: str, unit: Unit, zone: tzinfo) -> tuple[datetime, datetime] | None:
    if len(text) == 10:  # a plain date
        return _local_day(date.fromisoformat(text), zone) if unit == "day" else None
    # Python 3.10's fromisoformat() does not know the "Z" suffix.
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if unit == "day":
        if moment.tzinfo is None:
            return _local_day(moment.date(), zone)
        start = datetime.combine(moment.date(), _MIDNIGHT, tzinfo=moment.tzinfo)
        return _utc(start), _day_end(start, zone)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if hour.tzinfo is None:
        hour = hour.replace(tzinfo=zone)  # fold 0: a repeated hour is read as its first pass
    start = _utc(hour)
    return start, start + timedelta(hours=1)


@dataclass(frozen=True)
class Complete:
    """What an answer holds: its complete points, oldest first, one per period (the later
    entry wins), and how many valid points were partial."""

    points: tuple[KpiPoint, ...]
    partial: int


def complete_points(
    data: object, value_key: str, unit: Unit, zone: tzinfo, now: datetime
) -> Complete:
    """The points of periods that have ended by `now`, among the valid ones in `data` (a list
    in any order; an entry is valid with a readable `time` of a period that starts by the end
    of tomorrow, and a count as value)."""
    by_start: dict[datetime, KpiPoint] = {}
    partial = 0
    day_after_tomorrow = now.astimezone(zone).date() + timedelta(days=2)
    horizon = _local_day(day_after_tomorrow, zone)[0]
    for entry in data if isinstance(data, list) else ():
        point = _point(entry, value_key, unit, zone)
        if point is None or point.start >= horizon:
            continue
        if point.end > now:
            partial += 1
        else:
            by_start[point.start] = point
    return Complete(tuple(by_start[start] for start in sorted(by_start)), partial)


def _point(entry: object, value_key: str, unit: Unit, zone: tzinfo) -> KpiPoint | None:
    if not isinstance(entry, dict):
        return None
    value = entry.get(value_key)
    if not _is_count(value):
        return None
    period = period_of(entry.get("time"), unit, zone)
    return None if period is None else KpiPoint(*period, value)


def _is_count(value: object) -> TypeGuard[int]:
    """A non-negative integer (not a bool) that a Prometheus sample (a float64) can hold."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return False
    try:
        float(value)
    except OverflowError:  # beyond about 1.8e308
        return False
    return True


def _local_day(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    return (
        _utc(datetime.combine(day, _MIDNIGHT, tzinfo=zone)),
        _utc(datetime.combine(day + timedelta(days=1), _MIDNIGHT, tzinfo=zone)),
    )


def _day_end(start: datetime, zone: tzinfo) -> datetime:
    """End of a day written with an offset: the company's next midnight when the day starts at
    a local midnight of its zone (so DST days keep their length), else 24 hours later."""
    local = start.astimezone(zone)
    if local.time() == _MIDNIGHT:
        return _local_day(local.date(), zone)[1]
    return _utc(start) + timedelta(days=1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(_UTC)
