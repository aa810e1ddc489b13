"""The Braze simulator, exercised over real HTTP on a loopback port."""

from __future__ import annotations

import datetime
import http.client
import itertools
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import trustme

from exporter.simulator import (
    ALL_PERMISSIONS,
    DEMO_WORKSPACES,
    KINDS,
    BrazeSimulator,
    Fault,
    SimApp,
    SimWorkspace,
    main,
)
from exporter.simulator.values import HOURLY_CURVE
from tests.conftest import FakeClock

UTC = datetime.timezone.utc
NEW_YORK = ZoneInfo("America/New_York")

KEY = "test-key"
OTHER_KEY = "other-key"
NY_KEY = "new-york-key"
IOS = SimApp("aaaaaaaa-0000-4000-8000-000000000001", "ios", 1_000_000)
ANDROID = SimApp("aaaaaaaa-0000-4000-8000-000000000002", "android", 600_000)
OTHER_APP = SimApp("bbbbbbbb-0000-4000-8000-000000000001", "web", 5_000)
WORKSPACE = SimWorkspace("main", KEY, (IOS, ANDROID))
OTHER_WORKSPACE = SimWorkspace("other", OTHER_KEY, (OTHER_APP,))
NY_WORKSPACE = SimWorkspace("ny", NY_KEY, (IOS, ANDROID), time_zone="America/New_York")
NOW = datetime.datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
NEXT_HOUR = datetime.datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
ENDING_AT = "2026-11-20T12:00:00Z"

# The spec of the six kinds: request path, extra parameters, value key, permission.
KIND_REQUESTS: dict[str, tuple[str, dict[str, str], str, str]] = {
    "mau": ("/kpi/mau/data_series", {}, "mau", "kpi.mau.data_series"),
    "dau": ("/kpi/dau/data_series", {}, "dau", "kpi.dau.data_series"),
    "new_users": ("/kpi/new_users/data_series", {}, "new_users", "kpi.new_users.data_series"),
    "uninstalls": ("/kpi/uninstalls/data_series", {}, "uninstalls", "kpi.uninstalls.data_series"),
    "sessions": ("/sessions/data_series", {"unit": "day"}, "sessions", "sessions.data_series"),
    "sessions_hourly": (
        "/sessions/data_series",
        {"unit": "hour"},
        "sessions",
        "sessions.data_series",
    ),
}
DAILY_KINDS = [kind for kind in KIND_REQUESTS if kind != "sessions_hourly"]
CURRENT_DAY_KINDS = [kind for kind in DAILY_KINDS if kind != "mau"]  # served partial

Params = Mapping[str, object]  # values sent as str()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[BrazeSimulator]:
    workspaces = [WORKSPACE, OTHER_WORKSPACE, NY_WORKSPACE]
    with BrazeSimulator(workspaces, clock=clock) as simulator:
        yield simulator


def fetch(
    sim: BrazeSimulator,
    kind: str = "mau",
    params: Params | None = None,
    *,
    key: str | None = KEY,
    path: str | None = None,
) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    kind_path, kind_params, _, _ = KIND_REQUESTS[kind]
    query: Params = {"length": 7, "ending_at": ENDING_AT} if params is None else params
    url = sim.url + (path or kind_path)
    sent = {**kind_params, **{name: str(value) for name, value in query.items()}}
    return requests.get(url, params=sent, headers=headers, timeout=5)


def points(
    sim: BrazeSimulator, kind: str, params: Params | None = None, *, key: str = KEY
) -> list[tuple[str, int]]:
    """(time, value) of every point of a successful answer, in the order served."""
    response = fetch(sim, kind, params, key=key)
    assert response.status_code == 200, response.text
    value_key = KIND_REQUESTS[kind][2]
    return [(point["time"], point[value_key]) for point in response.json()["data"]]


def day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def instant(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10: no "Z"


def period_of(kind: str, time_text: str) -> datetime.date | datetime.datetime:
    return instant(time_text) if kind == "sessions_hourly" else day(time_text)


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# --- the six kinds -------------------------------------------------------------------


def test_the_six_kinds_and_five_permissions() -> None:
    assert tuple(KIND_REQUESTS) == KINDS
    assert {permission for *_, permission in KIND_REQUESTS.values()} == ALL_PERMISSIONS


@pytest.mark.parametrize("kind", DAILY_KINDS)
def test_each_daily_kind_answers_one_point_per_day(sim: BrazeSimulator, kind: str) -> None:
    response = fetch(sim, kind, {"length": 7, "ending_at": ENDING_AT, "app_id": IOS.app_id})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == "success"
    newest = 19 if kind == "mau" else 20  # MAU is computed nightly: a day behind
    value_key = KIND_REQUESTS[kind][2]
    assert [point["time"] for point in body["data"]] == [
        f"2026-11-{d}" for d in range(newest - 6, newest + 1)
    ]
    for point in body["data"]:
        assert set(point) == {"time", value_key}
        expected = sim.expected_value(KEY, kind, IOS.app_id, day(point["time"]))
        assert point[value_key] == expected


def test_hourly_sessions_answer_one_point_per_hour(sim: BrazeSimulator) -> None:
    params: Params = {"length": 7, "ending_at": ENDING_AT, "app_id": IOS.app_id}
    data = fetch(sim, "sessions_hourly", params).json()["data"]

    assert [point["time"] for point in data] == [f"2026-11-20T{h:02}:00:00Z" for h in range(6, 13)]
    for point in data:
        assert set(point) == {"time", "sessions"}
        hour = instant(point["time"])
        assert point["sessions"] == sim.expected_value(KEY, "sessions_hourly", IOS.app_id, hour)


def test_sessions_without_unit_are_daily(sim: BrazeSimulator) -> None:
    params = {"length": 3, "ending_at": ENDING_AT}
    without_unit = fetch(sim, path="/sessions/data_series", params=params)

    assert without_unit.json() == fetch(sim, "sessions", params).json()
    assert [point["time"] for point in without_unit.json()["data"]][-1] == "2026-11-20"


@pytest.mark.parametrize("unit", ["minute", "week", "", "DAY", "hours"])
def test_an_unknown_unit_gets_400(sim: BrazeSimulator, unit: str) -> None:
    response = fetch(sim, path="/sessions/data_series", params={"length": 1, "unit": unit})

    assert response.status_code == 400
    assert "unit" in response.json()["message"]


def test_the_kpi_endpoints_take_no_unit(sim: BrazeSimulator) -> None:
    params = {"length": 2, "ending_at": ENDING_AT}
    with_unit = fetch(sim, "dau", {**params, "unit": "hour"})

    assert with_unit.status_code == 200
    assert with_unit.json() == fetch(sim, "dau", params).json()


@pytest.mark.parametrize("missing", sorted(ALL_PERMISSIONS))
def test_a_key_without_a_permission_gets_403_for_its_kinds_only(
    clock: FakeClock, missing: str
) -> None:
    limited = SimWorkspace("limited", KEY, (IOS,), permissions=ALL_PERMISSIONS - {missing})
    with BrazeSimulator([limited], clock=clock) as sim:
        answers = {kind: fetch(sim, kind) for kind in KINDS}

    refused = {kind for kind, response in answers.items() if response.status_code == 403}
    assert refused == {kind for kind, (*_, needs) in KIND_REQUESTS.items() if needs == missing}
    assert refused  # every permission guards at least one kind
    for kind in refused:
        assert missing in answers[kind].json()["message"]
    assert all(answers[kind].status_code == 200 for kind in set(KINDS) - refused)


# --- periods: ending_at, now, partial points -----------------------------------------


def test_without_ending_at_the_series_ends_now(sim: BrazeSimulator) -> None:
    assert [t for t, _ in points(sim, "mau", {"length": 3})] == [
        "2026-11-24",
        "2026-11-25",
        "2026-11-26",
    ]
    assert sim.newest_day() == datetime.date(2026, 11, 26)
    assert [t for t, _ in points(sim, "dau", {"length": 2})] == ["2026-11-26", "2026-11-27"]
    hours = [t for t, _ in points(sim, "sessions_hourly", {"length": 2})]
    assert hours == ["2026-11-27T09:00:00Z", "2026-11-27T10:00:00Z"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_ending_at_after_now_ends_the_series_now(sim: BrazeSimulator, kind: str) -> None:
    future = {"length": 2, "ending_at": "2027-01-15T00:00:00Z"}

    assert points(sim, kind, future) == points(sim, kind, {"length": 2})


@pytest.mark.parametrize(
    ("ending_at", "newest"),
    [
        ("2026-11-20", "2026-11-19"),
        ("2026-11-20T00:00:00.000Z", "2026-11-19"),
        ("2026-11-20T23:59:59+02:00", "2026-11-19"),
        ("2018-06-28T23:59:59-05:00", "2018-06-28"),  # 04:59 UTC on the 29th
    ],
)
def test_ending_at_accepts_dates_z_and_offsets(
    sim: BrazeSimulator, ending_at: str, newest: str
) -> None:
    data = fetch(sim, params={"length": 1, "ending_at": ending_at}).json()["data"]

    assert data[0]["time"] == newest
    assert sim.newest_day(instant(ending_at)) == day(newest)


@pytest.mark.parametrize("kind", CURRENT_DAY_KINDS)
def test_the_current_day_is_partial_until_it_ends(
    sim: BrazeSimulator, clock: FakeClock, kind: str
) -> None:
    today = datetime.date(2026, 11, 27)
    complete = sim.expected_value(KEY, kind, IOS.app_id, today)
    (time_text, partial), *_ = points(sim, kind, {"length": 1, "app_id": IOS.app_id})

    assert time_text == "2026-11-27"
    assert partial == round(complete * 10.5 / 24) < complete  # 10:30 of 24 hours

    clock.now = datetime.datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    ending = {"length": 1, "app_id": IOS.app_id, "ending_at": "2026-11-27T10:30:00Z"}
    assert points(sim, kind, ending) == [("2026-11-27", complete)]


def test_the_current_hour_is_partial_until_it_ends(sim: BrazeSimulator, clock: FakeClock) -> None:
    hour = datetime.datetime(2026, 11, 27, 10, tzinfo=UTC)
    complete = sim.expected_value(KEY, "sessions_hourly", None, hour)
    served = points(sim, "sessions_hourly", {"length": 2})

    assert served[-1] == ("2026-11-27T10:00:00Z", round(complete / 2))
    assert served[-1][1] < complete
    assert served[0][1] == sim.expected_value(KEY, "sessions_hourly", None, hour.replace(hour=9))

    clock.now = NEXT_HOUR.timestamp()
    ending = {"length": 1, "ending_at": "2026-11-27T10:59:59Z"}
    assert points(sim, "sessions_hourly", ending) == [("2026-11-27T10:00:00Z", complete)]


def test_mau_is_never_partial(sim: BrazeSimulator, clock: FakeClock) -> None:
    for moment in (NOW, datetime.datetime(2026, 11, 27, 23, 59, tzinfo=UTC)):
        clock.now = moment.timestamp()
        served = points(sim, "mau", {"length": 1, "app_id": IOS.app_id})
        assert served == [
            ("2026-11-26", sim.expected_value(KEY, "mau", IOS.app_id, day("2026-11-26")))
        ]


@pytest.mark.parametrize("length", [1, 100])
@pytest.mark.parametrize("kind", ["mau", "sessions_hourly"])
def test_length_bounds_are_inclusive(sim: BrazeSimulator, kind: str, length: int) -> None:
    response = fetch(sim, kind, params={"length": length})

    assert response.status_code == 200
    assert len(response.json()["data"]) == length


def test_newest_complete_and_local_now(sim: BrazeSimulator, clock: FakeClock) -> None:
    assert sim.local_now(KEY) == NOW
    assert sim.local_now(NY_KEY).utcoffset() == datetime.timedelta(hours=-5)
    assert sim.local_now(NY_KEY).isoformat() == "2026-11-27T05:30:00-05:00"
    for kind in DAILY_KINDS:
        assert sim.newest_complete(KEY, kind) == datetime.date(2026, 11, 26)
        assert sim.newest_complete(NY_KEY, kind) == datetime.date(2026, 11, 26)
    hourly = sim.newest_complete(NY_KEY, "sessions_hourly")
    assert isinstance(hourly, datetime.datetime)
    assert hourly.isoformat() == "2026-11-27T04:00:00-05:00"
    assert sim.newest_complete(KEY, "sessions_hourly") == datetime.datetime(
        2026, 11, 27, 9, tzinfo=UTC
    )

    clock.now = datetime.datetime(2026, 11, 28, 3, 0, tzinfo=UTC).timestamp()  # 22:00 in NY
    assert sim.newest_complete(KEY, "dau") == datetime.date(2026, 11, 27)
    assert sim.newest_complete(NY_KEY, "dau") == datetime.date(2026, 11, 26)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", [KEY, NY_KEY])
def test_the_newest_complete_point_is_served_with_its_expected_value(
    sim: BrazeSimulator, kind: str, key: str
) -> None:
    newest = sim.newest_complete(key, kind)
    served = {
        period_of(kind, time_text): value
        for time_text, value in points(sim, kind, {"length": 3}, key=key)
    }

    assert served[newest] == sim.expected_value(key, kind, None, newest)


# --- time zones, DST and time formats ------------------------------------------------


def test_days_are_cut_in_the_workspace_time_zone(sim: BrazeSimulator) -> None:
    evening_in_new_york = {"length": 1, "ending_at": "2026-11-20T03:00:00Z"}  # 22:00 on the 19th

    assert [t for t, _ in points(sim, "dau", evening_in_new_york)] == ["2026-11-20"]
    assert [t for t, _ in points(sim, "dau", evening_in_new_york, key=NY_KEY)] == ["2026-11-19"]
    assert [t for t, _ in points(sim, "mau", evening_in_new_york, key=NY_KEY)] == ["2026-11-18"]


def last_second_in_new_york(date: str) -> str:
    next_midnight = datetime.datetime.combine(day(date), datetime.time(), tzinfo=NEW_YORK)
    next_midnight += datetime.timedelta(days=1)  # wall-clock arithmetic: the next midnight
    return (next_midnight.astimezone(UTC) - datetime.timedelta(seconds=1)).isoformat()


def dst_day_hours(sim: BrazeSimulator, date: str, length: int) -> list[tuple[str, int]]:
    """The hourly points of one of IOS's New York days, asked for up to its last hour."""
    params = {"length": length, "app_id": IOS.app_id, "ending_at": last_second_in_new_york(date)}
    return points(sim, "sessions_hourly", params, key=NY_KEY)


@pytest.mark.parametrize(
    ("date", "hours", "first", "last"),
    [
        ("2026-03-08", 23, "2026-03-08T00:00:00-05:00", "2026-03-08T23:00:00-04:00"),
        ("2026-11-01", 25, "2026-11-01T00:00:00-04:00", "2026-11-01T23:00:00-05:00"),
        ("2026-11-02", 24, "2026-11-02T00:00:00-05:00", "2026-11-02T23:00:00-05:00"),
    ],
)
def test_a_dst_day_has_23_or_25_hours_and_its_sessions_are_their_sum(
    sim: BrazeSimulator, date: str, hours: int, first: str, last: str
) -> None:
    served = dst_day_hours(sim, date, hours)
    one_more = dst_day_hours(sim, date, hours + 1)

    assert (served[0][0], served[-1][0]) == (first, last)
    assert one_more[1:] == served
    assert one_more[0][0].startswith((day(date) - datetime.timedelta(days=1)).isoformat())
    instants = [instant(t) for t, _ in served]
    assert all(b - a == datetime.timedelta(hours=1) for a, b in itertools.pairwise(instants))
    ending = {"length": 1, "app_id": IOS.app_id, "ending_at": last_second_in_new_york(date)}
    daily = points(sim, "sessions", ending, key=NY_KEY)
    total = sum(value for _, value in served)
    assert daily == [(date, total)]
    assert total == sim.expected_value(NY_KEY, "sessions", IOS.app_id, day(date))
    for hour, (_, value) in zip(instants, served, strict=True):
        assert value == sim.expected_value(NY_KEY, "sessions_hourly", IOS.app_id, hour)


def test_a_spring_forward_day_skips_2_am_and_a_fall_back_day_repeats_1_am(
    sim: BrazeSimulator,
) -> None:
    spring = [t[11:16] for t, _ in dst_day_hours(sim, "2026-03-08", 23)]
    fall = [t[11:] for t, _ in dst_day_hours(sim, "2026-11-01", 25)]

    assert "02:00" not in spring
    assert spring[:3] == ["00:00", "01:00", "03:00"]
    assert fall[:4] == ["00:00:00-04:00", "01:00:00-04:00", "01:00:00-05:00", "02:00:00-05:00"]


def test_naive_hours_have_no_offset_and_repeat_at_a_fall_back(clock: FakeClock) -> None:
    with BrazeSimulator([NY_WORKSPACE], clock=clock, time_format="naive") as sim:
        hours = [t for t, _ in dst_day_hours(sim, "2026-11-01", 25)]
        days = [t for t, _ in points(sim, "dau", {"length": 2}, key=NY_KEY)]

    assert all(re.fullmatch(r"2026-11-01T\d\d:00:00", t) for t in hours)
    assert hours[:4] == [f"2026-11-01T{h}:00:00" for h in ("00", "01", "01", "02")]
    assert days == ["2026-11-26", "2026-11-27"]


def test_date_format_hours_carry_the_zones_offset(sim: BrazeSimulator) -> None:
    hours = [t for t, _ in points(sim, "sessions_hourly", {"length": 2}, key=NY_KEY)]
    days = [t for t, _ in points(sim, "sessions", {"length": 2}, key=NY_KEY)]

    assert hours == ["2026-11-27T04:00:00-05:00", "2026-11-27T05:00:00-05:00"]
    assert days == ["2026-11-26", "2026-11-27"]


def test_datetime_format_days_are_local_midnights(clock: FakeClock) -> None:
    with BrazeSimulator([WORKSPACE, NY_WORKSPACE], clock=clock, time_format="datetime") as sim:
        utc_days = [t for t, _ in points(sim, "mau", {"length": 1, "ending_at": ENDING_AT})]
        ny_days = [t for t, _ in points(sim, "dau", {"length": 1}, key=NY_KEY)]
        ny_hours = [t for t, _ in points(sim, "sessions_hourly", {"length": 1}, key=NY_KEY)]

    assert utc_days == ["2026-11-19T00:00:00.000Z"]
    assert ny_days == ["2026-11-27T00:00:00.000-05:00"]
    assert ny_hours == ["2026-11-27T05:00:00-05:00"]


def test_a_half_hour_zone_starts_its_hours_at_half_past_utc(clock: FakeClock) -> None:
    india = SimWorkspace("india", KEY, (IOS,), time_zone="Asia/Kolkata")
    with BrazeSimulator([india], clock=clock) as sim:
        hours = [t for t, _ in points(sim, "sessions_hourly", {"length": 2})]
        newest = sim.newest_complete(KEY, "sessions_hourly")

    assert hours == ["2026-11-27T15:00:00+05:30", "2026-11-27T16:00:00+05:30"]  # 10:30 UTC
    assert newest == instant("2026-11-27T09:30:00Z")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        BrazeSimulator([SimWorkspace("mars", KEY, time_zone=zone)])


def test_unknown_time_format_is_refused() -> None:
    with pytest.raises(ValueError, match="time_format"):
        BrazeSimulator([WORKSPACE], time_format="epoch")


# --- the value model -----------------------------------------------------------------


def days_before(newest: datetime.date, count: int) -> list[datetime.date]:
    return [newest - datetime.timedelta(days=back) for back in range(count)]


@pytest.mark.parametrize("kind", ["mau", "dau", "new_users", "uninstalls"])
def test_whole_workspace_counts_overlapping_users_once(sim: BrazeSimulator, kind: str) -> None:
    for when in days_before(day("2026-11-26"), 30):
        apps_sum = sum(sim.expected_value(KEY, kind, app.app_id, when) for app in WORKSPACE.apps)
        whole = sim.expected_value(KEY, kind, None, when)
        assert whole != apps_sum
        assert whole == round(0.85 * apps_sum)

    served = points(sim, kind, {"length": 1, "ending_at": "2026-11-20T23:59:59Z"})
    newest = day("2026-11-19" if kind == "mau" else "2026-11-20")
    assert served == [(newest.isoformat(), sim.expected_value(KEY, kind, None, newest))]


@pytest.mark.parametrize("kind", ["sessions", "sessions_hourly"])
def test_whole_workspace_sessions_are_the_sum_of_its_apps(sim: BrazeSimulator, kind: str) -> None:
    params: Params = {"length": 30, "ending_at": ENDING_AT}
    whole = points(sim, kind, params, key=NY_KEY)
    per_app = [
        points(sim, kind, {**params, "app_id": app.app_id}, key=NY_KEY) for app in NY_WORKSPACE.apps
    ]

    for index, (time_text, value) in enumerate(whole):
        assert value == sum(app_points[index][1] for app_points in per_app)
        assert value == sim.expected_value(NY_KEY, kind, None, period_of(kind, time_text))


@pytest.mark.parametrize("kind", ["mau", "dau", "sessions"])
def test_values_have_a_weekly_rhythm(sim: BrazeSimulator, kind: str) -> None:
    params: Params = {"length": 14, "ending_at": ENDING_AT, "app_id": IOS.app_id}
    values = [value for _, value in points(sim, kind, params)]

    assert len(set(values)) > 1
    assert values != sorted(values)
    assert values != sorted(values, reverse=True)


def test_the_weekly_rhythm_follows_the_local_date(sim: BrazeSimulator) -> None:
    for when in days_before(day("2026-11-26"), 14):
        utc = sim.expected_value(KEY, "dau", IOS.app_id, when)
        assert sim.expected_value(NY_KEY, "dau", IOS.app_id, when) == utc


def test_values_are_realistic_shares_of_mau(sim: BrazeSimulator) -> None:
    for when in days_before(day("2026-11-26"), 30):
        mau = sim.expected_value(KEY, "mau", IOS.app_id, when)
        dau = sim.expected_value(KEY, "dau", IOS.app_id, when)
        assert 0.9 * IOS.base_mau < mau < 1.3 * IOS.base_mau
        assert 0.15 < dau / mau < 0.25
        assert 0.007 < sim.expected_value(KEY, "new_users", IOS.app_id, when) / mau < 0.013
        assert 0.0015 < sim.expected_value(KEY, "uninstalls", IOS.app_id, when) / mau < 0.0025
        assert 2.3 < sim.expected_value(KEY, "sessions", IOS.app_id, when) / dau < 2.7


def test_the_hourly_curve_is_low_at_night_and_high_in_the_evening() -> None:
    assert len(HOURLY_CURVE) == 24
    assert sum(HOURLY_CURVE) / 24 == pytest.approx(1)
    assert 0.2 <= min(HOURLY_CURVE) <= 0.3
    assert 1.7 <= max(HOURLY_CURVE) <= 1.9
    assert HOURLY_CURVE.index(min(HOURLY_CURVE)) in range(1, 7)
    assert HOURLY_CURVE.index(max(HOURLY_CURVE)) in range(18, 23)


def test_hourly_sessions_change_gently_from_hour_to_hour() -> None:
    """Alerts compare each hour with the same hour a week before: the rhythm must be smooth."""
    sim = BrazeSimulator(DEMO_WORKSPACES)  # only its data model; never started
    production = DEMO_WORKSPACES[0]
    start = datetime.datetime(2026, 10, 20, tzinfo=UTC)  # three weeks over a fall-back
    hours = [start + datetime.timedelta(hours=k) for k in range(21 * 24)]
    for app in production.apps:
        values = [
            sim.expected_value(production.api_key, "sessions_hourly", app.app_id, hour)
            for hour in hours
        ]
        local_hours = [hour.astimezone(NEW_YORK).hour for hour in hours]
        for before, after in itertools.pairwise(values):
            assert max(before, after) / min(before, after) <= 1.4
        busiest = max(range(len(values)), key=values.__getitem__)
        quietest = min(range(len(values)), key=values.__getitem__)
        assert local_hours[busiest] in range(18, 23)
        assert local_hours[quietest] in range(1, 7)


@pytest.mark.parametrize("workspace", DEMO_WORKSPACES, ids=lambda workspace: workspace.name)
def test_an_hour_stays_close_to_the_same_hour_a_week_before_across_dst(
    workspace: SimWorkspace,
) -> None:
    """What the drop alert compares (Prometheus' `offset 7d`: 168 hours, so across a DST
    change the week-ago hour is the neighbouring local hour)."""
    sim = BrazeSimulator(DEMO_WORKSPACES)  # only its data model; never started
    start = datetime.datetime(2026, 3, 1, tzinfo=UTC)  # over both spring-forwards
    hours = [start + datetime.timedelta(hours=k) for k in range(5 * 7 * 24)]
    for app in workspace.apps:
        values = [
            sim.expected_value(workspace.api_key, "sessions_hourly", app.app_id, hour)
            for hour in hours
        ]
        for week_ago, now in zip(values, values[7 * 24 :], strict=False):
            assert max(week_ago, now) / min(week_ago, now) <= 1.4


@pytest.mark.parametrize("kind", ["dau", "sessions_hourly"])
def test_values_are_deterministic_across_instances(
    sim: BrazeSimulator, clock: FakeClock, kind: str
) -> None:
    params: Params = {"length": 30, "ending_at": ENDING_AT, "app_id": ANDROID.app_id}
    with BrazeSimulator([WORKSPACE], clock=clock) as twin:
        assert fetch(twin, kind, params).json() == fetch(sim, kind, params).json()


def test_expected_value_refuses_unknown_keys_kinds_apps_and_periods(sim: BrazeSimulator) -> None:
    when = datetime.date(2026, 11, 1)
    hour = datetime.datetime(2026, 11, 1, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="api_key"):
        sim.expected_value("nobody", "mau", None, when)
    with pytest.raises(ValueError, match="kind"):
        sim.expected_value(KEY, "sessions_daily", None, when)
    with pytest.raises(ValueError, match="app_id"):
        sim.expected_value(KEY, "mau", OTHER_APP.app_id, when)
    with pytest.raises(ValueError, match=r"datetime\.date"):
        sim.expected_value(KEY, "dau", None, hour)
    with pytest.raises(ValueError, match="aware"):
        sim.expected_value(KEY, "sessions_hourly", None, when)
    with pytest.raises(ValueError, match="aware"):
        sim.expected_value(KEY, "sessions_hourly", None, hour.replace(tzinfo=None))
    with pytest.raises(ValueError, match="does not start an hour"):
        sim.expected_value(KEY, "sessions_hourly", None, hour.replace(minute=30))
    with pytest.raises(ValueError, match="kind"):
        sim.newest_complete(KEY, "wau")


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Token {KEY}", "Bearer", f'Bearer "{KEY}"'],
)
def test_a_missing_or_wrong_key_is_refused_without_echo(
    sim: BrazeSimulator, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(
        f"{sim.url}/kpi/mau/data_series", params={"length": 1}, headers=headers, timeout=5
    )

    assert response.status_code == 401
    assert response.json() == {"message": "Invalid API key"}
    assert "wrong-key" not in response.text
    assert KEY not in response.text
    assert not any(name.lower().startswith("x-ratelimit") for name in response.headers)


@pytest.mark.parametrize("kind", ["mau", "sessions_hourly"])
@pytest.mark.parametrize("length", ["0", "101", "x", "1.5", "", "-1", None])
def test_a_bad_or_missing_length_gets_400(
    sim: BrazeSimulator, kind: str, length: str | None
) -> None:
    params = {} if length is None else {"length": length}
    response = fetch(sim, kind, params=params)

    assert response.status_code == 400
    assert "length" in response.json()["message"]


@pytest.mark.parametrize("kind", ["mau", "sessions"])
@pytest.mark.parametrize("app_id", ["not-an-app", OTHER_APP.app_id, ""])
def test_an_app_id_outside_the_workspace_gets_400(
    sim: BrazeSimulator, kind: str, app_id: str
) -> None:
    response = fetch(sim, kind, params={"length": 1, "app_id": app_id})

    assert response.status_code == 400
    assert "app_id" in response.json()["message"]


@pytest.mark.parametrize("kind", ["mau", "sessions_hourly"])
@pytest.mark.parametrize(
    "ending_at",
    ["yesterday", "2026-13-01", "2026-11-20T25:00:00Z", "", "0001-01-01T00:00:00Z"],
)
def test_an_unparseable_or_impossible_ending_at_gets_400(
    sim: BrazeSimulator, kind: str, ending_at: str
) -> None:
    response = fetch(sim, kind, params={"length": 2, "ending_at": ending_at}, key=NY_KEY)

    assert response.status_code == 400
    assert "ending_at" in response.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/kpi/sessions/data_series",
        "/kpi/mau",
        "/kpi/mau/data_series/x",
        "/sessions",
        "/sessions/data_series/hour",
        "/",
    ],
)
def test_an_unknown_path_gets_404(sim: BrazeSimulator, path: str) -> None:
    response = fetch(sim, path=path)

    assert response.status_code == 404
    assert response.json()["message"]


def test_a_post_gets_405(sim: BrazeSimulator) -> None:
    response = requests.post(
        f"{sim.url}/kpi/mau/data_series",
        data=b'{"length": 1}',
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )

    assert response.status_code == 405
    assert response.json()["message"]


# --- rate limits -----------------------------------------------------------------------


def test_every_authenticated_answer_carries_rate_limit_headers(sim: BrazeSimulator) -> None:
    first = fetch(sim)
    refused = fetch(sim, params={"length": 0})
    sessions = fetch(sim, "sessions_hourly")

    assert first.headers["X-RateLimit-Limit"] == "250000"
    assert first.headers["X-RateLimit-Remaining"] == "249999"
    assert first.headers["X-RateLimit-Reset"] == str(int(NEXT_HOUR.timestamp()))
    assert refused.status_code == 400
    assert refused.headers["X-RateLimit-Remaining"] == "249998"
    assert sessions.headers["X-RateLimit-Remaining"] == "249997"  # one bucket for all
    assert "X-RateLimit-Limit" in set(first.headers.keys())  # the spelling on the wire


def test_rate_limit_headers_can_arrive_lower_case(clock: FakeClock) -> None:
    with BrazeSimulator([WORKSPACE], clock=clock, lowercase_headers=True) as sim:
        names = set(fetch(sim).headers.keys())

    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= names
    assert "X-RateLimit-Limit" not in names


def test_an_exhausted_bucket_answers_429_until_the_next_clock_hour(clock: FakeClock) -> None:
    small = SimWorkspace("small", KEY, (IOS,), rate_limit=2)
    with BrazeSimulator([small, OTHER_WORKSPACE], clock=clock) as sim:
        assert [fetch(sim).headers["X-RateLimit-Remaining"] for _ in range(2)] == ["1", "0"]
        limited = fetch(sim, "sessions")
        other_workspace = fetch(sim, key=OTHER_KEY)
        clock.now = NEXT_HOUR.timestamp()
        after_reset = fetch(sim)

    assert limited.status_code == 429
    assert limited.json() == {"message": "Rate limit exceeded"}
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert other_workspace.status_code == 200
    assert after_reset.status_code == 200
    assert after_reset.headers["X-RateLimit-Remaining"] == "1"
    assert after_reset.headers["X-RateLimit-Reset"] == str(int(NEXT_HOUR.timestamp()) + 3600)


def test_the_remaining_count_can_be_set(sim: BrazeSimulator) -> None:
    sim.set_rate_limit_remaining(KEY, 1)
    assert fetch(sim).headers["X-RateLimit-Remaining"] == "0"
    assert fetch(sim).status_code == 429


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(status=503), "Service Unavailable"),
        (Fault(status=429), "Rate limit exceeded"),
        (Fault(status=500, message="boom"), "boom"),
        (Fault(status=202), "queued"),
        (Fault(status=599), "Error"),
    ],
)
def test_a_status_fault_answers_a_braze_style_error(
    sim: BrazeSimulator, fault: Fault, message: str
) -> None:
    sim.inject(fault)
    response = fetch(sim)

    assert response.status_code == fault.status
    assert response.json() == {"message": message}
    assert response.headers["X-RateLimit-Remaining"] == "249999"  # it still counted


def test_a_message_fault_answers_200_without_data(sim: BrazeSimulator) -> None:
    sim.inject(Fault(message="error"))
    response = fetch(sim)

    assert response.status_code == 200
    assert response.json() == {"message": "error"}


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault(body=b"{not json"), 200), (Fault(status=502, body=b"<html>bad gateway</html>"), 502)],
)
def test_a_body_fault_sends_the_raw_body(sim: BrazeSimulator, fault: Fault, status: int) -> None:
    sim.inject(fault)
    response = fetch(sim)

    assert response.status_code == status
    assert response.content == fault.body
    assert response.headers["Content-Type"] == "application/json"


def test_a_data_fault_sends_the_data_verbatim(sim: BrazeSimulator) -> None:
    data: list[dict[str, object]] = [
        {"time": "2026-11-19T09:13:40.359Z", "mau": 5},
        {"time": "2026-11-18", "mau": -1},
        {"time": "2026-11-17", "mau": None},
    ]
    sim.inject(Fault(data=data))

    assert fetch(sim).json() == {"message": "success", "data": data}


def test_a_delay_fault_answers_normally_after_the_delay(sim: BrazeSimulator) -> None:
    sim.inject(Fault(delay=0.2))
    started = time.monotonic()
    response = fetch(sim)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert len(response.json()["data"]) == 7


def test_a_drop_fault_closes_the_connection_without_answer(sim: BrazeSimulator) -> None:
    sim.inject(Fault(drop_connection=True, times=1))
    with pytest.raises(requests.ConnectionError):
        fetch(sim)

    assert fetch(sim).status_code == 200
    assert [request.status for request in sim.requests] == [0, 200]


def test_fault_headers_override_the_normal_ones(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=429, headers={"Retry-After": "3", "x-ratelimit-remaining": ""}))
    response = fetch(sim)

    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == ""
    assert response.headers["X-RateLimit-Limit"] == "250000"


def test_a_fault_with_times_expires(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=500, times=2))

    assert [fetch(sim).status_code for _ in range(3)] == [500, 500, 200]


def test_a_fault_needs_a_positive_times(sim: BrazeSimulator) -> None:
    with pytest.raises(ValueError, match="times"):
        sim.inject(Fault(status=500, times=0))


def test_faults_apply_to_authenticated_requests_only(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=503))

    assert fetch(sim, key="wrong").status_code == 401


@pytest.mark.parametrize(
    ("fault", "faulted"),
    [
        (Fault(status=500, kpi="dau"), {"dau"}),
        (Fault(status=500, kpi="sessions"), {"sessions", "sessions_no_unit"}),
        (Fault(status=500, kpi="sessions_hourly"), {"sessions_hourly"}),
        (Fault(status=500, app_id=None), {"whole"}),
        (Fault(status=500, app_id=IOS.app_id), {"ios"}),
        (Fault(status=500, api_key=OTHER_KEY), {"other"}),
        (
            Fault(status=500),
            {"dau", "sessions", "sessions_no_unit", "sessions_hourly"}
            | {"whole", "ios", "android", "other"},
        ),
    ],
)
def test_faults_match_by_kind_app_and_key(
    sim: BrazeSimulator, fault: Fault, faulted: set[str]
) -> None:
    sim.inject(fault)
    android: Params = {"length": 1, "app_id": ANDROID.app_id}
    calls: dict[str, Callable[[], requests.Response]] = {
        "dau": lambda: fetch(sim, "dau", android),
        "sessions": lambda: fetch(sim, "sessions", android),
        "sessions_no_unit": lambda: fetch(sim, path="/sessions/data_series", params=android),
        "sessions_hourly": lambda: fetch(sim, "sessions_hourly", android),
        "whole": lambda: fetch(sim, "mau", {"length": 1}),
        "ios": lambda: fetch(sim, "mau", {"length": 1, "app_id": IOS.app_id}),
        "android": lambda: fetch(sim, "mau", android),
        "other": lambda: fetch(
            sim, "mau", {"length": 1, "app_id": OTHER_APP.app_id}, key=OTHER_KEY
        ),
    }

    statuses = {name: call().status_code for name, call in calls.items()}

    assert {name for name, status in statuses.items() if status == 500} == faulted
    assert {name for name, status in statuses.items() if status == 200} == set(calls) - faulted


def test_the_first_matching_fault_wins_until_cleared(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=500, kpi="mau"))
    sim.inject(Fault(status=503))

    assert fetch(sim, "mau").status_code == 500
    assert fetch(sim, "dau").status_code == 503
    sim.clear_faults()
    assert fetch(sim, "mau").status_code == 200


# --- recording, lifecycle, command line ------------------------------------------------


def test_every_request_is_recorded(sim: BrazeSimulator, clock: FakeClock) -> None:
    fetch(sim, params={"length": "3", "app_id": IOS.app_id})
    fetch(sim, key=None)
    fetch(sim, key="wrong")
    clock.now += 5
    fetch(sim, path="/nowhere")
    fetch(sim, "sessions_hourly", params={"length": "2"})

    recorded = sim.requests
    assert [(r.path, r.api_key, r.status) for r in recorded] == [
        ("/kpi/mau/data_series", KEY, 200),
        ("/kpi/mau/data_series", None, 401),
        ("/kpi/mau/data_series", "wrong", 401),
        ("/nowhere", KEY, 404),
        ("/sessions/data_series", KEY, 200),
    ]
    assert recorded[0].params == {"length": "3", "app_id": IOS.app_id}
    assert recorded[4].params == {"length": "2", "unit": "hour"}
    assert [r.time for r in recorded] == [NOW.timestamp()] * 3 + [NOW.timestamp() + 5] * 2
    sim.clear_requests()
    assert sim.requests == []


def test_stop_returns_promptly_while_a_slow_answer_is_in_flight() -> None:
    sim = BrazeSimulator([WORKSPACE]).start()
    sim.inject(Fault(delay=30))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(fetch(sim))
        except requests.ConnectionError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: sim.requests)
    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 1
    caller.join(timeout=5)
    assert isinstance(outcome[0], requests.ConnectionError)
    sim.stop()  # idempotent


def test_a_simulator_starts_once() -> None:
    with BrazeSimulator([WORKSPACE]) as sim, pytest.raises(RuntimeError):
        sim.start()


def test_two_workspaces_cannot_share_a_key() -> None:
    with pytest.raises(ValueError, match="api_key"):
        BrazeSimulator([WORKSPACE, SimWorkspace("twin", KEY)])


def test_keep_alive_connections_are_reused_and_do_not_block_stop() -> None:
    sim = BrazeSimulator([WORKSPACE]).start()
    host, port = sim.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {KEY}"}
    statuses = []
    sockets = []
    for target in ("/kpi/mau/data_series?length=2", "/sessions/data_series?length=2&unit=hour"):
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.append(connection.sock)
    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 1
    assert statuses == [200, 200]
    assert sockets[0] is sockets[1] is not None
    connection.close()


def test_url_needs_a_started_simulator_and_brackets_ipv6() -> None:
    sim = BrazeSimulator([WORKSPACE], host="::1")
    with pytest.raises(RuntimeError):
        _ = sim.url
    try:
        sim.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert sim.url.startswith("http://[::1]:")
        assert fetch(sim).status_code == 200
    finally:
        sim.stop()


def test_demo_workspaces() -> None:
    production, staging = DEMO_WORKSPACES
    assert (production.api_key, staging.api_key) == ("demo-production-key", "demo-staging-key")
    assert [app.base_mau for app in production.apps] == [1_200_000, 950_000, 400_000]
    assert [app.name for app in staging.apps] == ["ios"]
    assert (production.time_zone, staging.time_zone) == ("America/New_York", "Europe/Berlin")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_main_serves_the_demo_workspaces_until_signalled(signum: signal.Signals) -> None:
    app_id = DEMO_WORKSPACES[0].apps[0].app_id
    with subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            url = process.stdout.readline().split()[-1]
            response = requests.get(
                f"{url}/sessions/data_series",
                params={"length": "1", "ending_at": ENDING_AT, "app_id": app_id, "unit": "hour"},
                headers={"Authorization": "Bearer demo-production-key"},
                timeout=5,
            )
            process.send_signal(signum)
            assert process.wait(timeout=5) == 0
            printed = process.stdout.read()
            warnings = process.stderr.read()
        finally:
            process.kill()  # a no-op once it has exited

    # another process, same values: the noise does not depend on Python's hash seed
    hour = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    expected = BrazeSimulator(DEMO_WORKSPACES).expected_value(
        "demo-production-key", "sessions_hourly", app_id, hour
    )
    assert response.json()["data"] == [{"time": "2026-11-20T07:00:00-05:00", "sessions": expected}]
    assert "demo-staging-key" in printed
    assert "Europe/Berlin" in printed
    assert warnings == ""  # e.g. no runpy warning about exporter.simulator.__main__


def test_main_refuses_a_bad_listen_address() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--listen", "nowhere"])
    assert exit_info.value.code == 2


def test_it_serves_https_with_a_server_context(tmp_path: Path, clock: FakeClock) -> None:
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with BrazeSimulator((WORKSPACE,), clock=clock, tls=context) as simulator:
        assert simulator.url.startswith("https://127.0.0.1:")
        answer = requests.get(
            f"{simulator.url}/kpi/mau/data_series",
            params={"length": 1},
            headers={"Authorization": f"Bearer {KEY}"},
            verify=str(ca_file),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]) == 1
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without its CA
            requests.get(f"{simulator.url}/kpi/mau/data_series", timeout=5)
