import dataclasses
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.base import BaseScheduler
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from exporter.braze import BrazeClient, RetryPolicy
from exporter.config import read_api_key, validate_config
from exporter.kpis import SUPPORTED_KPIS
from exporter.poller import ClockWatchdog, Limits, Outcome, Poller, limits_for, schedule
from exporter.series import series_of
from exporter.simulator import ALL_PERMISSIONS, BrazeSimulator, Fault, SimApp, SimWorkspace
from exporter.state import StateStore
from exporter.values import KpiPoint
from exporter.wiring import build_exporter
from tests.conftest import (
    KEY_ENV,
    PROD_KEY,
    STAGE_KEY,
    FakeClock,
    config_data,
    day_point,
    wait_until,
)


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
    env = {**KEY_ENV, "STAGE_KEY": "revoked-key-0123456789abcdef"}
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


class HangingClient:
    """Stands in for a client whose requests never end until `release` is set, whatever their
    timeout: then each returns `point`."""

    paused_until = 0.0

    def __init__(self, point: KpiPoint) -> None:
        self.point = point
        self.release = threading.Event()
        self.calls = 0

    def newest_point(self, *args: object) -> KpiPoint:
        self.calls += 1
        self.release.wait()
        return self.point

    def close(self) -> None:
        pass  # a request stuck in a socket read does not notice a closed session either


@contextmanager
def stuck_stage(
    sim: BrazeSimulator, limits: Limits
) -> Iterator[tuple[Poller, HangingClient, StateStore]]:
    """A poller whose prod series are polled from the simulator and whose two stage series
    (the whole workspace, then app ios) hang; one poll at a time."""
    config = validate_config(config_data(sim.url), environ=KEY_ENV)
    all_series = series_of(config)
    store = StateStore(all_series)
    stuck = HangingClient(day_point(sim.newest_day(), 42))
    clients = {
        "prod": BrazeClient(sim.url, SecretStr(PROD_KEY), timeout=2),
        "stage": cast(BrazeClient, stuck),
    }
    p = Poller(store, clients, all_series, length=3, concurrency=1, limits=limits)
    try:
        yield p, stuck, store
    finally:
        stuck.release.set()
        p.close()


def cycle_within(p: Poller, seconds: float) -> Counter[Outcome] | None:
    """Run one cycle in a thread of its own; fail if it is still running after `seconds`."""
    result: list[Counter[Outcome] | None] = []
    cycle = threading.Thread(target=lambda: result.append(p.run_cycle()), daemon=True)
    cycle.start()
    cycle.join(seconds)
    assert not cycle.is_alive(), f"the poll cycle is still running after {seconds:g}s"
    return result[0]


def stage_success(store: StateStore) -> list[bool | None]:
    series = store.snapshot().series
    return [state.last_poll_success for s, state in series.items() if s.workspace == "stage"]


def test_a_stuck_poll_is_abandoned_and_never_starves_later_cycles(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """One poll at a time, and both stage series hang forever: a fixed pool of one worker
    would be stuck for good after the first. Each hanging poll is given up after its limit,
    its series fails, and later cycles still poll every prod series."""
    caplog.set_level(logging.WARNING, logger="exporter.poller")
    limits = Limits(series=0.3, cycle=30, stalled=300)
    with stuck_stage(sim, limits) as (p, stuck, store):
        for _ in range(3):
            assert cycle_within(p, 5) == {Outcome.SUCCEEDED: 3, Outcome.FAILED: 2}
        assert stuck.calls == 2  # not asked again while the first two polls still hang
        assert len(sim.requests) == 9  # every prod series in every cycle
        assert stage_success(store) == [False, False]
        abandoned = [
            (r.__dict__["workspace"], r.__dict__["app"])
            for r in caplog.records
            if r.getMessage() == "poll abandoned: no answer in time"
        ]
        assert abandoned == [("stage", "(workspace)"), ("stage", "ios")]
        not_sent = "poll not sent: the abandoned poll of an earlier cycle still runs"
        assert caplog.messages.count(not_sent) == 4

        # Once the stuck polls return, their late answers are dropped (the cycle that asked
        # is over) and the series are polled again.
        stuck.release.set()
        assert p.wait_idle(5)
        assert stage_success(store) == [False, False]
        assert cycle_within(p, 5) == {Outcome.SUCCEEDED: 5}
        assert stuck.calls == 4
        assert stage_success(store) == [True, True]


def test_a_cycle_waits_for_nothing_past_its_own_limit(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.poller")
    with stuck_stage(sim, Limits(series=60, cycle=0.5, stalled=300)) as (p, stuck, store):
        started = time.monotonic()
        assert cycle_within(p, 5) == {Outcome.SUCCEEDED: 3, Outcome.FAILED: 2}
        assert time.monotonic() - started >= 0.5
        assert stuck.calls == 1  # the whole stage workspace hung; there was no time for ios
        assert stage_success(store) == [False, False]
    failures = [(r.getMessage(), r.__dict__["app"]) for r in caplog.records]
    assert failures == [
        ("poll abandoned: no answer in time", "(workspace)"),
        ("poll not sent: the cycle ran out of time", "ios"),
    ]


def test_the_limits_follow_interval_and_timeout() -> None:
    retry = RetryPolicy()  # 3 attempts, backoff at most 0.5 s then 1 s
    assert dataclasses.astuple(limits_for(900, 10, retry)) == pytest.approx((31.5, 810, 3510))
    assert dataclasses.astuple(limits_for(30, 5, retry)) == pytest.approx((16.5, 27, 117))


def test_the_poller_is_live_while_cycles_complete(sim: BrazeSimulator) -> None:
    now = 1000.0
    config = validate_config(config_data(sim.url), environ=KEY_ENV)
    all_series = series_of(config)
    clients = {
        w.name: BrazeClient(sim.url, read_api_key(w, KEY_ENV), timeout=2) for w in config.workspaces
    }
    p = Poller(
        StateStore(all_series),
        clients,
        all_series,
        length=3,
        concurrency=2,
        limits=Limits(series=5, cycle=9, stalled=39),
        monotonic=lambda: now,
    )
    try:
        assert p.is_live()
        now += 38.9  # since the start, no cycle yet
        assert p.is_live()
        now += 0.2
        assert not p.is_live()
        assert p.run_cycle() == {Outcome.SUCCEEDED: 5}
        assert p.is_live()
        now += 38.9
        assert p.is_live()
        now += 0.2
        assert not p.is_live()
    finally:
        p.close()


class Clocks:
    """A wall clock and a monotonic one, moved by hand."""

    def __init__(self, wall: float) -> None:
        self.wall_now = wall
        self.monotonic_now = 5000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.monotonic_now += seconds


@contextmanager
def watched_schedule(
    sim: BrazeSimulator, interval: int, next_run: datetime
) -> Iterator[tuple[BaseScheduler, ClockWatchdog, Clocks]]:
    """The poll job scheduled (paused: the test moves the clocks, nothing runs), its next
    run at `next_run`, and a watchdog on clocks that read 10 s before it."""
    p, _ = make_poller(sim)
    scheduler = schedule(p, interval_seconds=interval)
    scheduler.start(paused=True)
    try:
        scheduler.get_job("poll").modify(next_run_time=next_run)
        clocks = Clocks(next_run.timestamp() - 10)
        watchdog = ClockWatchdog(scheduler, wall=clocks.wall, monotonic=clocks.monotonic)
        yield scheduler, watchdog, clocks
    finally:
        scheduler.shutdown()
        p.close()


GRID_POINT = datetime(2026, 11, 27, 10, 16, tzinfo=timezone.utc)  # on the grid of 10 s and 15m


@pytest.mark.parametrize(("interval", "step"), [(900, -3600), (10, -30), (900, -30), (900, -1)])
def test_a_step_back_of_the_clock_delays_the_next_cycle_by_at_most_an_interval(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture, interval: int, step: int
) -> None:
    """APScheduler keeps the next run as a wall-clock time: after a step back of an hour, the
    next cycle would come an hour late. The watchdog moves it to the next point of the grid."""
    caplog.set_level(logging.INFO, logger="exporter.poller")
    with watched_schedule(sim, interval, GRID_POINT) as (scheduler, watchdog, clocks):
        clocks.advance(5)
        assert watchdog.check() == 0
        clocks.wall_now += step
        assert watchdog.check() == step
        next_run = scheduler.get_job("poll").next_run_time
        assert 0 < next_run.timestamp() - clocks.wall_now <= interval
        assert next_run.timestamp() % interval == 60 % interval  # still on the grid
        assert next_run <= GRID_POINT
    stepped = [r for r in caplog.records if r.getMessage() == "wall clock stepped"]
    assert [r.__dict__["step_seconds"] for r in stepped] == [step]


def test_drift_and_a_step_forward_leave_the_schedule_alone(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Forward, the scheduler's own waits (real time) end when the run is due."""
    caplog.set_level(logging.INFO, logger="exporter.poller")
    with watched_schedule(sim, 900, GRID_POINT) as (scheduler, watchdog, clocks):
        for _ in range(5):
            clocks.advance(1)
            clocks.wall_now += 0.5  # slewing, or a step too small to matter
            assert watchdog.check() == 0
        clocks.wall_now += 3600
        assert watchdog.check() == 3600
        assert scheduler.get_job("poll").next_run_time == GRID_POINT
    assert [r.getMessage() for r in caplog.records] == ["wall clock stepped"]


def test_a_running_scheduler_polls_within_an_interval_of_a_step_back(sim: BrazeSimulator) -> None:
    """The scheduler as it is after the wall clock stepped back an hour: its next run an hour
    away. The watchdog sees the step on its clocks (the wall one real, the monotonic one an
    hour ahead once the step happened) and the running scheduler polls within the interval."""
    p, _ = make_poller(sim)
    scheduler = schedule(p, interval_seconds=1)
    scheduler.start(paused=True)
    step = 0.0
    watchdog = ClockWatchdog(scheduler, monotonic=lambda: time.monotonic() + step)
    try:
        job = scheduler.get_job("poll")
        job.modify(next_run_time=datetime.now(timezone.utc) + timedelta(hours=1))
        scheduler.resume()
        step = 3600.0
        assert watchdog.check() == pytest.approx(-3600, abs=0.5)
        assert job.next_run_time <= datetime.now(timezone.utc) + timedelta(seconds=1)
        wait_until(lambda: len(sim.requests) >= 5, "a cycle", timeout=3)
    finally:
        scheduler.shutdown(wait=True)
        p.close()


def test_the_watchdog_checks_in_its_own_thread(sim: BrazeSimulator) -> None:
    with watched_schedule(sim, 900, GRID_POINT) as (scheduler, _, clocks):
        watchdog = ClockWatchdog(
            scheduler, wall=clocks.wall, monotonic=clocks.monotonic, period=0.01
        )
        watchdog.start()
        try:
            clocks.wall_now -= 3600
            wait_until(
                lambda: scheduler.get_job("poll").next_run_time < GRID_POINT,
                "the watchdog to bring the next cycle forward",
                timeout=5,
            )
        finally:
            watchdog.stop()


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


@contextmanager
def kinds_setup(
    moment: datetime,
    *,
    time_zone: str = "UTC",
    time_format: str = "date",
    permissions: frozenset[str] = ALL_PERMISSIONS,
) -> Iterator[tuple[BrazeSimulator, Poller, CollectorRegistry, FakeClock]]:
    """One workspace (ios, web and the whole) polling every kind, simulator and exporter on
    the same fake clock."""
    clock = FakeClock(moment)
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
        after_launch = job.trigger.get_next_fire_time(now, now)  # the first cycle, off the grid
        assert after_launch == fires[0]
        if minutes is not None:
            assert {fire.minute for fire in fires} <= set(minutes)
            assert fires[0].minute == (min(m for m in minutes if m > 7) if interval < 3600 else 1)
    finally:
        p.close()
