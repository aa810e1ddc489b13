"""Braze `time` values as periods in the company's time zone; the newest complete point."""

from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from exporter.kpis import Unit
from exporter.periods import complete_points, period_of
from exporter.values import KpiPoint
from tests.conftest import day_point, hour_point

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30, no DST


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def hours(period: tuple[datetime, datetime] | None) -> float:
    assert period is not None
    return (period[1] - period[0]) / timedelta(hours=1)


def test_a_plain_date_is_a_day_of_the_workspace_zone() -> None:
    assert period_of("2026-11-27", "day", NEW_YORK) == (utc(2026, 11, 27, 5), utc(2026, 11, 28, 5))
    assert period_of("2026-11-27", "day", UTC) == (utc(2026, 11, 27), utc(2026, 11, 28))
    assert period_of("2026-11-27", "day", KOLKATA) == (
        utc(2026, 11, 26, 18, 30),
        utc(2026, 11, 27, 18, 30),
    )


def test_dst_days_last_23_and_25_hours() -> None:
    assert hours(period_of("2026-03-08", "day", NEW_YORK)) == 23
    assert hours(period_of("2026-11-01", "day", NEW_YORK)) == 25
    assert hours(period_of("2026-11-02", "day", NEW_YORK)) == 24
    # Written as local midnight with its offset: the same company day, DST included.
    assert period_of("2026-03-08T00:00:00.000-05:00", "day", NEW_YORK) == period_of(
        "2026-03-08", "day", NEW_YORK
    )
    assert hours(period_of("2026-11-01T00:00:00-04:00", "day", NEW_YORK)) == 25


def test_a_datetime_with_an_offset_keeps_it() -> None:
    # A UTC datetime for a New York workspace: the UTC day as written, not New York's.
    assert period_of("2026-11-27T00:00:00.000Z", "day", NEW_YORK) == (
        utc(2026, 11, 27),
        utc(2026, 11, 28),
    )
    assert period_of("2026-11-22T18:30:00.000Z", "day", UTC) == (
        utc(2026, 11, 22),
        utc(2026, 11, 23),
    )
    assert period_of("2026-11-27T13:00:00+05:30", "hour", NEW_YORK) == (
        utc(2026, 11, 27, 7, 30),
        utc(2026, 11, 27, 8, 30),
    )
    assert period_of("2026-11-27T13:00:00z", "hour", NEW_YORK) == (
        utc(2026, 11, 27, 13),
        utc(2026, 11, 27, 14),
    )


def test_a_naive_datetime_is_read_in_the_workspace_zone() -> None:
    assert period_of("2026-11-27T13:00:00", "hour", NEW_YORK) == (
        utc(2026, 11, 27, 18),
        utc(2026, 11, 27, 19),
    )
    assert period_of("2026-11-27T13:59:59.999", "hour", NEW_YORK) == period_of(
        "2026-11-27T13:00:00", "hour", NEW_YORK
    )
    assert period_of("2026-11-27T09:13:40", "day", NEW_YORK) == period_of(
        "2026-11-27", "day", NEW_YORK
    )
    # The repeated 1 a.m. of a fall-back day is read as its first pass (EDT).
    assert period_of("2026-11-01T01:00:00", "hour", NEW_YORK) == (
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 6),
    )
    # The hour after the spring-forward gap: 3 a.m. EDT follows 1 a.m. EST directly.
    assert period_of("2026-03-08T01:00:00", "hour", NEW_YORK) == (
        utc(2026, 3, 8, 6),
        utc(2026, 3, 8, 7),
    )
    assert period_of("2026-03-08T03:00:00", "hour", NEW_YORK) == (
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 8),
    )


@pytest.mark.parametrize(
    "value", [None, 5, "", "not a date", "2026-13-01", "2026-11-27T25:00:00", "Z"]
)
def test_unreadable_times_are_none(value: object) -> None:
    assert period_of(value, "day", UTC) is None
    assert period_of(value, "hour", UTC) is None


def test_a_plain_date_is_no_hour() -> None:
    assert period_of("2026-11-27", "hour", UTC) is None


NOW = utc(2026, 11, 27, 10, 30)


def newest_complete(
    data: object, value_key: str, unit: Unit, zone: tzinfo, now: datetime
) -> tuple[KpiPoint | None, int]:
    """The newest complete point and the number of partial ones."""
    complete = complete_points(data, value_key, unit, zone, now)
    return (complete.points[-1] if complete.points else None, complete.partial)


def test_the_newest_complete_point_whatever_the_order_and_junk() -> None:
    data = [
        {"time": "2026-11-20", "mau": 100},
        {"time": "2026-11-26", "mau": -1},  # negative: invalid
        {"time": "2026-11-26", "mau": True},  # bool is not a count
        {"time": "2026-11-25", "mau": 12.5},
        {"time": "2026-11-24", "mau": "300"},
        {"time": "2026-11-23", "mau": None},
        {"time": "not a date", "mau": 5},
        {"mau": 6},
        "garbage",
        {"time": "2026-11-22T18:30:00.000Z", "mau": 220},
        {"time": "2026-11-21", "mau": 210},
    ]
    assert newest_complete(data, "mau", "day", UTC, NOW) == (day_point(date(2026, 11, 22), 220), 0)
    assert newest_complete([{"time": "2026-11-26", "mau": 0}], "mau", "day", UTC, NOW) == (
        day_point(date(2026, 11, 26), 0),
        0,
    )
    assert newest_complete([], "mau", "day", UTC, NOW) == (None, 0)
    assert newest_complete({"not": "a list"}, "mau", "day", UTC, NOW) == (None, 0)
    assert newest_complete([{"time": "2026-11-26", "dau": 5}], "mau", "day", UTC, NOW) == (None, 0)


def test_partial_periods_are_never_chosen() -> None:
    days = [{"time": f"2026-11-{d}", "dau": d} for d in (25, 26, 27)]
    assert newest_complete(days, "dau", "day", UTC, NOW) == (day_point(date(2026, 11, 26), 26), 1)
    # In New York it is still 05:30 on the 27th, and the 26th ended at 05:00 UTC today.
    assert newest_complete(days, "dau", "day", NEW_YORK, NOW) == (
        day_point(date(2026, 11, 26), 26, NEW_YORK),
        1,
    )
    assert newest_complete(days, "dau", "day", NEW_YORK, utc(2026, 11, 27, 4, 59))[0] == (
        day_point(date(2026, 11, 25), 25, NEW_YORK)
    )
    # A point far in the future is not complete either.
    future = [*days, {"time": "9999-12-30", "dau": 1}]
    assert newest_complete(future, "dau", "day", UTC, NOW)[0] == day_point(date(2026, 11, 26), 26)


def test_the_hour_that_ends_now_is_complete() -> None:
    data = [
        {"time": "2026-11-27T09:00:00Z", "sessions": 9},
        {"time": "2026-11-27T10:00:00Z", "sessions": 10},
    ]
    assert newest_complete(data, "sessions", "hour", UTC, NOW) == (
        hour_point(utc(2026, 11, 27, 9), 9),
        1,
    )
    assert newest_complete(data, "sessions", "hour", UTC, utc(2026, 11, 27, 11)) == (
        hour_point(utc(2026, 11, 27, 10), 10),
        0,
    )
    assert newest_complete(data, "sessions", "hour", UTC, utc(2026, 11, 27, 9, 59)) == (None, 2)


@pytest.mark.parametrize(
    ("value", "unit", "zone"),
    [
        ("9999-12-31", "day", UTC),  # its end is past datetime's range
        ("9999-12-31T23:00:00", "hour", UTC),
        ("9999-12-31", "day", NEW_YORK),
        ("0001-01-01", "day", KOLKATA),  # its start in UTC is before year 1
    ],
)
def test_times_at_the_edge_of_the_calendar_are_unreadable(
    value: str, unit: Unit, zone: tzinfo
) -> None:
    assert period_of(value, unit, zone) is None


def test_a_point_dated_after_tomorrow_is_junk_not_partial() -> None:
    # NOW is 10:30 UTC on the 27th: tomorrow (the 28th) may be partial, what follows is junk.
    future = ["2026-11-29", "2030-01-01", "9999-12-30", "9999-12-31"]
    assert newest_complete([{"time": t, "dau": 1} for t in future], "dau", "day", UTC, NOW) == (
        None,
        0,
    )
    days = [{"time": f"2026-11-{d}", "dau": d} for d in (26, 27, 28)]
    junk = [{"time": t, "dau": 10**6} for t in future]
    assert newest_complete(days + junk, "dau", "day", UTC, NOW) == (
        day_point(date(2026, 11, 26), 26),
        2,
    )
    hours = [
        {"time": "2026-11-28T23:00:00Z", "sessions": 1},  # the last hour of tomorrow: partial
        {"time": "2026-11-29T00:00:00Z", "sessions": 2},  # junk
    ]
    assert newest_complete(hours, "sessions", "hour", UTC, NOW) == (None, 1)
    # In New York it is still the 27th: the 29th starts at 05:00 UTC on the 29th.
    assert newest_complete(hours, "sessions", "hour", NEW_YORK, NOW) == (None, 2)
    assert newest_complete([{"time": "2026-11-29", "dau": 1}], "dau", "day", NEW_YORK, NOW) == (
        None,
        0,
    )


@pytest.mark.parametrize(
    "value", [10**400, 2**1024 - 1, -(10**400)], ids=["10^400", "2^1024-1", "-10^400"]
)
def test_counts_a_float64_cannot_hold_are_junk(value: int) -> None:
    data = [{"time": "2026-11-26", "mau": value}, {"time": "2026-11-25", "mau": 25}]
    assert newest_complete(data, "mau", "day", UTC, NOW) == (day_point(date(2026, 11, 25), 25), 0)
    largest = [{"time": "2026-11-26", "mau": 2**1023}]  # a float64 holds it
    assert newest_complete(largest, "mau", "day", UTC, NOW)[0] == day_point(
        date(2026, 11, 26), 2**1023
    )


def test_every_complete_point_oldest_first_the_later_entry_winning() -> None:
    data = [
        {"time": "2026-11-25", "dau": 25},
        {"time": "2026-11-27", "dau": 27},  # partial at NOW
        {"time": "2026-11-24", "dau": 24},
        {"time": "2026-11-25", "dau": 250},  # a revision of the 25th, later in the list
        {"time": "2026-11-26", "dau": 26},
    ]
    complete = complete_points(data, "dau", "day", UTC, NOW)
    assert complete.points == (
        day_point(date(2026, 11, 24), 24),
        day_point(date(2026, 11, 25), 250),
        day_point(date(2026, 11, 26), 26),
    )
    assert complete.partial == 1
