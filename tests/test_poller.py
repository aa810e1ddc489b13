import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from exporter.braze import BrazeClient
from exporter.cli import build_exporter
from exporter.config import read_api_key, validate_config
from exporter.kpis import SUPPORTED_KPIS
from exporter.poller import Outcome, Poller, schedule
from exporter.series import series_of
from exporter.simulator import ALL_PERMISSIONS, BrazeSimulator, Fault, SimApp, SimWorkspace
from exporter.state import StateStore
from tests.conftest import KEY_ENV, PROD_KEY, STAGE_KEY, config_data, wait_until


def make_poller(sim: BrazeSimulator, **poll: object) -> tuple[Poller, CollectorRegistry]:
    config = validate_config(config_data(sim.url, **poll), environ=KEY_ENV)
    keys = {w.name: read_api_key(w, KEY_ENV) for w in config.workspaces}
    exporter = build_exporter(config, keys)
    return exporter.poller, exporter.registry


@pytest.fixture
def poller(sim: BrazeSimulator) -> Iterator[tuple[Poller, CollectorRegistry]]:
    poller, registry = make_poller(sim)
    yield poller, registry
    poller.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_cycle_exports_every_series(
    sim: BrazeSimulator, poller: tuple[Poller, CollectorRegistry]
) -> None:
    p, registry = poller
    assert p.run_cycle() == {Outcome.SUCCEEDED: 5}
    day = sim.newest_day()
    for app, app_id in (("ios", "app-ios"), ("web", "app-web")):
        assert value(registry, "braze_monthly_active_users", workspace="prod", app=app) == (
            sim.expected_value(PROD_KEY, "mau", app_id, day)
        )
        assert value(registry, "braze_app_info", workspace="prod", app=app, app_id=app_id) == 1
        assert value(registry, "braze_last_poll_success", workspace="prod", app=app, kpi="mau") == 1
    assert value(registry, "braze_workspace_monthly_active_users", workspace="prod") == (
        sim.expected_value(PROD_KEY, "mau", None, day)
    )
    assert value(registry, "braze_workspace_monthly_active_users", workspace="stage") == (
        sim.expected_value(STAGE_KEY, "mau", None, day)
    )
    stamp = value(
        registry, "braze_kpi_point_timestamp_seconds", workspace="prod", app="", kpi="mau"
    )
    assert stamp is not None and stamp % 86400 == 0
    assert time.gmtime(stamp)[:3] == day.timetuple()[:3]
    assert value(registry, "braze_api_requests_total", workspace="prod", kpi="mau", code="200") == 3
    assert (
        value(registry, "braze_api_request_duration_seconds_count", workspace="stage", kpi="mau")
        == 2
    )
    assert value(registry, "braze_api_rate_limit_remaining", workspace="stage") == 250_000 - 2
    assert value(registry, "braze_poll_cycle_duration_seconds") is not None
    assert len(sim.requests) == 5  # one request per series per cycle


def test_a_failed_poll_keeps_the_last_value_and_isolates_the_series(
    sim: BrazeSimulator, poller: tuple[Poller, CollectorRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    p, registry = poller
    p.run_cycle()
    before = value(registry, "braze_monthly_active_users", workspace="prod", app="ios")
    success_time = value(
        registry, "braze_last_success_timestamp_seconds", workspace="prod", app="ios", kpi="mau"
    )
    sim.inject(Fault(status=400, message="bad request for ios", app_id="app-ios"))
    with caplog.at_level(logging.WARNING):
        assert p.run_cycle() == {Outcome.SUCCEEDED: 4, Outcome.FAILED: 1}
    assert value(registry, "braze_monthly_active_users", workspace="prod", app="ios") == before
    assert value(registry, "braze_last_poll_success", workspace="prod", app="ios", kpi="mau") == 0
    assert (
        value(
            registry, "braze_last_success_timestamp_seconds", workspace="prod", app="ios", kpi="mau"
        )
        == success_time
    )
    assert value(registry, "braze_last_poll_success", workspace="prod", app="web", kpi="mau") == 1
    assert value(registry, "braze_last_poll_success", workspace="prod", app="", kpi="mau") == 1
    (failure,) = [vars(r) for r in caplog.records if r.getMessage() == "poll failed"]
    logged = {k: failure[k] for k in ("workspace", "app", "kpi", "status", "error")}
    assert logged == {
        "workspace": "prod",
        "app": "ios",
        "kpi": "mau",
        "status": "400",
        "error": "bad request for ios",
    }


def test_a_series_that_never_succeeded_has_no_value(
    sim: BrazeSimulator, poller: tuple[Poller, CollectorRegistry]
) -> None:
    p, registry = poller
    sim.inject(Fault(status=500, app_id=None, api_key=STAGE_KEY))
    p.run_cycle()
    assert value(registry, "braze_workspace_monthly_active_users", workspace="stage") is None
    assert value(registry, "braze_last_poll_success", workspace="stage", app="", kpi="mau") == 0
    assert (
        value(registry, "braze_api_requests_total", workspace="stage", kpi="mau", code="500") == 3
    )


def test_one_bad_key_does_not_affect_another_workspace(sim: BrazeSimulator) -> None:
    env = {**KEY_ENV, "STAGE_KEY": "revoked-key"}
    config = validate_config(config_data(sim.url), environ=env)
    exporter = build_exporter(config, {w.name: read_api_key(w, env) for w in config.workspaces})
    try:
        assert exporter.poller.run_cycle() == {Outcome.SUCCEEDED: 3, Outcome.FAILED: 2}
    finally:
        exporter.poller.close()
    registry = exporter.registry
    assert value(registry, "braze_last_poll_success", workspace="stage", app="ios", kpi="mau") == 0
    assert (
        value(registry, "braze_api_requests_total", workspace="stage", kpi="mau", code="401") == 2
    )
    assert value(registry, "braze_last_poll_success", workspace="prod", app="ios", kpi="mau") == 1


def test_429_skips_the_rest_of_the_workspace_and_later_cycles(sim: BrazeSimulator) -> None:
    p, registry = make_poller(sim, concurrency=1)
    try:
        p.run_cycle()
        sim.clear_requests()
        reset = int(time.time()) + 3600
        sim.inject(Fault(status=429, api_key=PROD_KEY, headers={"X-RateLimit-Reset": str(reset)}))
        outcomes = p.run_cycle()
        prod_requests = [r for r in sim.requests if r.api_key == PROD_KEY]
        assert len(prod_requests) == 1  # the first 429 stopped the others of prod
        assert outcomes == {Outcome.FAILED: 1, Outcome.SKIPPED: 2, Outcome.SUCCEEDED: 2}
        assert (
            value(registry, "braze_api_rate_limit_reset_timestamp_seconds", workspace="prod")
            == reset
        )
        sim.clear_requests()
        assert p.run_cycle() == {Outcome.SKIPPED: 3, Outcome.SUCCEEDED: 2}
        assert all(r.api_key == STAGE_KEY for r in sim.requests)
        # Skipped series keep their state: still exported, still marked as they were.
        assert (
            value(registry, "braze_monthly_active_users", workspace="prod", app="web") is not None
        )
    finally:
        p.close()


def test_concurrency_is_bounded(sim: BrazeSimulator) -> None:
    p, _ = make_poller(sim, concurrency=2)
    sim.inject(Fault(delay=0.3))
    try:
        assert p.run_cycle() == {Outcome.SUCCEEDED: 5}
    finally:
        p.close()
    received = sorted(r.time for r in sim.requests)
    # Each answer takes 0.3 s: requests arriving within 0.2 s of each other were in flight
    # together. Two at a time: 0, 0, 0.3, 0.3, 0.6.
    most_together = max(sum(1 for t in received if start <= t < start + 0.2) for start in received)
    assert most_together == 2


def test_an_overrunning_cycle_is_not_started_twice(sim: BrazeSimulator) -> None:
    p, _ = make_poller(sim)
    sim.inject(Fault(delay=0.5, times=1, app_id="app-ios"))
    first = threading.Thread(target=p.run_cycle)
    first.start()
    wait_until(lambda: sim.requests, "the first request")
    try:
        assert p.run_cycle() is None
        assert not p.wait_idle(0.05)
        first.join()
        assert p.wait_idle(0.05)
    finally:
        p.close()
    assert len(sim.requests) == 5


class BrokenClient:
    """Stands in for a client with a bug: every call raises something unexpected."""

    paused_until = 0.0

    def newest_point(self, *args: object) -> None:
        raise RuntimeError("bug")

    def close(self) -> None:
        pass


def test_unexpected_errors_fail_one_series_only(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = validate_config(config_data(sim.url), environ=KEY_ENV)
    all_series = series_of(config)
    store = StateStore(all_series)
    clients = {
        "prod": BrazeClient(sim.url, SecretStr(PROD_KEY), timeout=2),
        "stage": cast(BrazeClient, BrokenClient()),
    }
    p = Poller(store, clients, all_series, length=3, concurrency=2)
    try:
        assert p.run_cycle() == {Outcome.SUCCEEDED: 3, Outcome.FAILED: 2}
    finally:
        p.close()
    assert any(r.getMessage() == "poll failed unexpectedly" for r in caplog.records)
    stage = [
        state for series, state in store.snapshot().series.items() if series.workspace == "stage"
    ]
    assert [state.last_poll_success for state in stage] == [False, False]


def test_schedule_runs_a_first_cycle_at_once_and_repeats(sim: BrazeSimulator) -> None:
    p, _ = make_poller(sim)
    scheduler = schedule(p, interval_seconds=0.2)
    scheduler.start()
    try:
        wait_until(lambda: len(sim.requests) >= 10, "two cycles of five series", timeout=5)
    finally:
        scheduler.shutdown(wait=True)
        p.close()


def test_closing_mid_cycle_cancels_it_quietly(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    p, registry = make_poller(sim, concurrency=1)
    sim.inject(Fault(status=503))  # the first series waits to retry, the others queue
    result: list[object] = []
    cycle = threading.Thread(target=lambda: result.append(p.run_cycle()))
    cycle.start()
    wait_until(lambda: sim.requests, "the first request")
    p.close()
    cycle.join(timeout=5)
    assert not cycle.is_alive()
    assert result == [None]
    assert len(sim.requests) == 1  # no retry, no further series after close()
    assert "poll cycle cancelled: the exporter is stopping" in caplog.messages
    assert value(registry, "braze_poll_cycle_duration_seconds") is None  # not a finished cycle
    assert p.run_cycle() is None  # a closed poller starts nothing
    assert len(sim.requests) == 1


# --- Every kind, end to end against the simulator, on a fixed clock -------------------------

ALL_KINDS = list(SUPPORTED_KPIS)
NEW_YORK = ZoneInfo("America/New_York")
IOS = SimApp("app-ios", "ios", 1_000_000)
WEB = SimApp("app-web", "web", 300_000)


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


@contextmanager
def kinds_setup(
    moment: datetime,
    *,
    time_zone: str = "UTC",
    time_format: str = "date",
    permissions: frozenset[str] = ALL_PERMISSIONS,
) -> Iterator[tuple[BrazeSimulator, Poller, CollectorRegistry, Clock]]:
    """One workspace (ios, web and the whole) polling every kind, simulator and exporter on
    the same fake clock."""
    clock = Clock(moment)
    workspace = SimWorkspace(
        "prod", PROD_KEY, (IOS, WEB), time_zone=time_zone, permissions=permissions
    )
    with BrazeSimulator((workspace,), clock=clock, time_format=time_format) as sim:
        data = config_data(sim.url, kpis=ALL_KINDS)
        workspaces = cast(list[dict[str, object]], data["workspaces"])
        data["workspaces"] = [{**workspaces[0], "time_zone": time_zone}]
        config = validate_config(data, environ=KEY_ENV)
        exporter = build_exporter(config, {"prod": SecretStr(PROD_KEY)}, clock)
        try:
            yield sim, exporter.poller, exporter.registry, clock
        finally:
            exporter.poller.close()


def served(registry: CollectorRegistry, kind: str, app: str | None) -> tuple[float | None, ...]:
    """(value, point timestamp) the exporter serves for one series."""
    kpi = SUPPORTED_KPIS[kind]
    if app is None:
        found = value(registry, kpi.workspace_metric, workspace="prod")
    else:
        found = value(registry, kpi.app_metric, workspace="prod", app=app)
    stamp = value(
        registry, "braze_kpi_point_timestamp_seconds", workspace="prod", app=app or "", kpi=kind
    )
    return found, stamp


def start_of(period: date | datetime, zone: ZoneInfo) -> float:
    if isinstance(period, datetime):
        return period.timestamp()
    return datetime(period.year, period.month, period.day, tzinfo=zone).timestamp()


@pytest.mark.parametrize("time_format", ["date", "datetime", "naive"])
@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_every_kind_exports_the_newest_complete_period(time_zone: str, time_format: str) -> None:
    zone = ZoneInfo(time_zone)
    with kinds_setup(
        datetime(2026, 11, 27, 10, 40, tzinfo=timezone.utc),
        time_zone=time_zone,
        time_format=time_format,
    ) as (sim, poller, registry, _):
        assert poller.run_cycle() == {Outcome.SUCCEEDED: 18}
        for kind in ALL_KINDS:
            period = sim.newest_complete(PROD_KEY, kind)
            for app, app_id in ((None, None), ("ios", "app-ios"), ("web", "app-web")):
                expected = sim.expected_value(PROD_KEY, kind, app_id, period)
                assert served(registry, kind, app) == (expected, start_of(period, zone)), (
                    kind,
                    app,
                )
            assert value(registry, "braze_app_info", workspace="prod", app="web", app_id="app-web")
        # One request per series, to the kind's own endpoint and unit.
        sent = sorted(
            (r.path, r.params.get("unit", ""), r.params.get("app_id", "")) for r in sim.requests
        )
        assert len(sent) == len(set(sent)) == 18
        assert {(path, unit) for path, unit, _ in sent} == {
            ("/kpi/mau/data_series", ""),
            ("/kpi/dau/data_series", ""),
            ("/kpi/new_users/data_series", ""),
            ("/kpi/uninstalls/data_series", ""),
            ("/sessions/data_series", "day"),
            ("/sessions/data_series", "hour"),
        }


def test_a_partial_period_is_never_exported() -> None:
    """The simulator serves the current hour and day, partial; the exporter holds back until
    they end. At 11:00 sharp the 10:00 hour is complete; the day is not yet."""
    utc = timezone.utc
    with kinds_setup(datetime(2026, 11, 27, 10, 40, tzinfo=utc)) as (sim, poller, registry, clock):
        for now, newest_hour in ((10, 40), 9), ((11, 0), 10):
            clock.now = datetime(2026, 11, 27, *now, tzinfo=utc).timestamp()
            poller.run_cycle()
            hour = datetime(2026, 11, 27, newest_hour, tzinfo=utc)
            assert served(registry, "sessions_hourly", "ios") == (
                sim.expected_value(PROD_KEY, "sessions_hourly", "app-ios", hour),
                hour.timestamp(),
            )
            yesterday = datetime(2026, 11, 26, tzinfo=utc)
            assert served(registry, "dau", "ios") == (
                sim.expected_value(PROD_KEY, "dau", "app-ios", yesterday.date()),
                yesterday.timestamp(),
            )


@pytest.mark.parametrize("time_format", ["date", "datetime", "naive"])
@pytest.mark.parametrize(
    ("day", "hours"), [(date(2026, 3, 8), 23), (date(2026, 11, 1), 25), (date(2026, 11, 2), 24)]
)
def test_dst_days_come_out_right(day: date, hours: int, time_format: str) -> None:
    """The day after a DST change, its daily sessions are the sum of its 23 or 25 hours, and
    it is stamped with its own local midnight."""
    morning = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK) + timedelta(days=1, hours=8)
    with kinds_setup(morning, time_zone="America/New_York", time_format=time_format) as (
        sim,
        poller,
        registry,
        _,
    ):
        assert poller.run_cycle() == {Outcome.SUCCEEDED: 18}
        midnight = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
        first = midnight.astimezone(timezone.utc)  # arithmetic in UTC: absolute hours
        hour_starts = [first + timedelta(hours=k) for k in range(hours)]
        assert (hour_starts[-1] + timedelta(hours=1)).astimezone(NEW_YORK).hour == 0
        total = sum(
            sim.expected_value(PROD_KEY, "sessions_hourly", "app-ios", h) for h in hour_starts
        )
        assert served(registry, "sessions", "ios") == (total, midnight.timestamp())


def test_the_hours_around_a_dst_change() -> None:
    # 03:30 EDT on 2026-03-08: the hour before is 01:00 EST (02:00 never happened).
    with kinds_setup(
        datetime(2026, 3, 8, 7, 30, tzinfo=timezone.utc),
        time_zone="America/New_York",
        time_format="naive",
    ) as (sim, poller, registry, _):
        poller.run_cycle()
        one_am = datetime(2026, 3, 8, 6, tzinfo=timezone.utc)
        assert served(registry, "sessions_hourly", "ios") == (
            sim.expected_value(PROD_KEY, "sessions_hourly", "app-ios", one_am),
            one_am.timestamp(),
        )


def test_a_kind_without_its_permission_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.poller")
    without_sessions = ALL_PERMISSIONS - {"sessions.data_series"}
    with kinds_setup(
        datetime(2026, 11, 27, 10, 40, tzinfo=timezone.utc), permissions=without_sessions
    ) as (_, poller, registry, _):
        assert poller.run_cycle() == {Outcome.SUCCEEDED: 12, Outcome.FAILED: 6}
        for kind in ALL_KINDS:
            for app in ("", "ios", "web"):
                ok = value(registry, "braze_last_poll_success", workspace="prod", app=app, kpi=kind)
                assert ok == (0 if kind.startswith("sessions") else 1), (kind, app)
        assert served(registry, "dau", "web")[0] is not None
        assert served(registry, "sessions", "web") == (None, None)
    failures = [r for r in caplog.records if r.getMessage() == "poll failed"]
    assert len(failures) == 6
    assert {
        (r.__dict__["kpi"], r.__dict__["status"], r.__dict__["needs_permission"]) for r in failures
    } == {
        ("sessions", "403", "sessions.data_series"),
        ("sessions_hourly", "403", "sessions.data_series"),
    }


@pytest.mark.parametrize(
    ("interval", "minutes"),
    [(900, (1, 16, 31, 46)), (3600, (1,)), (600, (1, 11, 21, 31, 41, 51)), (30, None)],
)
def test_later_cycles_run_on_a_fixed_grid_of_the_clock(
    sim: BrazeSimulator, interval: int, minutes: tuple[int, ...] | None
) -> None:
    """Whenever it starts, the exporter polls a minute after each interval since the epoch
    (with 15m: :01, :16, :31, :46), so an hour of sessions arrives a minute after it ends."""
    p, _ = make_poller(sim)
    try:
        job = schedule(p, interval_seconds=interval).get_jobs()[0]
        now = datetime(2026, 11, 27, 10, 7, 13, tzinfo=timezone.utc)
        fires = [job.trigger.get_next_fire_time(None, now)]
        for _ in range(8):
            fires.append(job.trigger.get_next_fire_time(fires[-1], fires[-1]))
        assert all(fire.timestamp() % interval == 60 % interval for fire in fires)
        assert all((b - a).total_seconds() == interval for a, b in itertools.pairwise(fires))
        assert fires[0] > now and (fires[0] - now).total_seconds() <= interval
        if minutes is not None:
            assert {fire.minute for fire in fires} <= set(minutes)
            assert fires[0].minute == (min(m for m in minutes if m > 7) if interval < 3600 else 1)
    finally:
        p.close()
