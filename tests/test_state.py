from collections.abc import Callable
from datetime import date

from exporter.config import validate_config
from exporter.kpis import MAU
from exporter.series import Series, series_of
from exporter.state import SeriesState, StateStore
from exporter.values import RateLimitInfo
from tests.conftest import day_point

IOS = Series("prod", "ios", "app-ios", MAU)
WHOLE = Series("prod", None, None, MAU)
OTHER = Series("stage", "web", "app-web", MAU)
POINT = day_point(date(2026, 11, 27), 1234)


def test_series_follow_the_config_order() -> None:
    config = validate_config(
        {
            "workspaces": [
                {
                    "name": "prod",
                    "url": "http://127.0.0.1:1",
                    "api_key_env": "K",
                    "apps": [{"name": "ios", "id": "app-ios"}],
                },
                {
                    "name": "stage",
                    "url": "http://127.0.0.1:1",
                    "api_key_env": "K",
                    "whole_workspace": False,
                    "apps": [{"name": "web", "id": "app-web"}],
                },
            ]
        },
        environ={"K": "state-test-key-0123456789"},
    )
    assert series_of(config) == (WHOLE, IOS, OTHER)


def test_new_series_start_empty() -> None:
    store = StateStore([IOS])
    assert store.snapshot().series == {IOS: SeriesState()}
    assert store.snapshot().cycles_completed == 0


def test_failure_keeps_the_point_and_the_success_time() -> None:
    store = StateStore([IOS])
    store.record_success(IOS, POINT, now=100.0)
    store.record_failure(IOS, "poll failed: status=500", 160.0)
    assert store.snapshot().series[IOS] == SeriesState(
        POINT, False, 100.0, last_error="poll failed: status=500", last_poll_time=160.0
    )
    store.record_success(IOS, POINT, now=220.0)  # a success clears the error
    assert store.snapshot().series[IOS] == SeriesState(POINT, True, 220.0, None, 220.0)


def test_snapshots_are_immutable_views() -> None:
    store = StateStore([IOS])
    before = store.snapshot()
    store.record_success(IOS, POINT, now=1.0)
    store.record_cycle(0.5)
    assert before.series[IOS] == SeriesState()  # an earlier scrape's view never changes
    after = store.snapshot()
    assert after.series[IOS].point == POINT
    assert (after.last_cycle_seconds, after.cycles_completed) == (0.5, 1)
    assert store.cycles_completed == 1


def test_set_series_adds_and_forgets_cleanly() -> None:
    store = StateStore([IOS, OTHER])
    store.record_success(IOS, POINT, now=1.0)
    store.record_rate_limit("stage", RateLimitInfo(10, 5, 3600.0))
    store.set_series([IOS, WHOLE])
    snapshot = store.snapshot()
    assert snapshot.series == {IOS: SeriesState(POINT, True, 1.0, None, 1.0), WHOLE: SeriesState()}
    assert snapshot.rate_limits == {}  # stage is gone with its series
    store.record_success(OTHER, POINT, now=2.0)  # a late answer for a dropped series
    store.record_failure(OTHER, "poll failed: status=500", 0.0)
    assert OTHER not in store.snapshot().series


def test_an_older_point_never_replaces_a_newer_one() -> None:
    store = StateStore([IOS])
    store.record_success(IOS, POINT, now=1.0)
    store.record_success(IOS, day_point(date(2026, 11, 20), 99), now=2.0)
    assert store.snapshot().series[IOS] == SeriesState(POINT, True, 2.0, None, 2.0)
    revised = day_point(POINT.start.date(), 1240)  # Braze may revise the newest day's value
    store.record_success(IOS, revised, now=3.0)
    assert store.snapshot().series[IOS].point == revised


def test_rate_limit_remaining_only_goes_down_within_a_window() -> None:
    store = StateStore([IOS])
    store.record_rate_limit("prod", RateLimitInfo(100, 40, 3600.0))
    store.record_rate_limit("prod", RateLimitInfo(100, 41, 3600.0))  # answered earlier, seen late
    assert store.snapshot().rate_limits["prod"] == RateLimitInfo(100, 40, 3600.0)
    store.record_rate_limit("prod", RateLimitInfo(100, 39, 3600.0))
    assert store.snapshot().rate_limits["prod"].remaining == 39
    store.record_rate_limit("prod", RateLimitInfo(100, 99, 7200.0))  # a new window
    assert store.snapshot().rate_limits["prod"] == RateLimitInfo(100, 99, 7200.0)


def test_pauses_are_kept_per_workspace_and_only_extended() -> None:
    store = StateStore([IOS, OTHER])
    assert store.snapshot().paused_until == {"prod": 0.0, "stage": 0.0}
    store.record_pause("prod", 7200.0)
    store.record_pause("prod", 3600.0)  # an earlier resume time seen late
    store.record_pause("gone", 9999.0)  # a workspace no longer configured
    assert store.snapshot().paused_until == {"prod": 7200.0, "stage": 0.0}
    store.set_series([OTHER])
    assert store.snapshot().paused_until == {"stage": 0.0}


def test_every_write_rings_the_doorbell_and_reads_do_not() -> None:
    store = StateStore([IOS, WHOLE])
    writes: list[Callable[[], None]] = [
        lambda: store.record_success(IOS, day_point(date(2026, 11, 27), 5), now=1.0),
        lambda: store.record_failure(WHOLE, "poll failed: status=500", now=2.0),
        lambda: store.record_rate_limit("prod", RateLimitInfo(250_000, 10, 3600.0)),
        lambda: store.record_pause("prod", 3600.0),
        lambda: store.record_cycle(1.5),
        lambda: store.set_series([IOS]),
    ]
    for write in writes:
        store.changed.clear()
        store.snapshot()
        store.paused_until()
        assert not store.changed.is_set()
        write()
        assert store.changed.is_set()
