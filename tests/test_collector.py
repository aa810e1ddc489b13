from datetime import date, datetime
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import BrazeCollector, RateLimitPauseCollector
from exporter.kpis import MAU, SESSIONS_HOURLY, SUPPORTED_KPIS
from exporter.series import Series
from exporter.state import StateStore
from exporter.values import RateLimitInfo
from tests.conftest import day_point, hour_point

IOS = Series("prod", "ios", "app-ios", MAU)
WEB = Series("prod", "web", "app-web", MAU)
WHOLE = Series("prod", None, None, MAU)


def registry_for(store: StateStore, now: float = 0.0) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BrazeCollector(store, "1.2.3"))
    registry.register(RateLimitPauseCollector(store, clock=lambda: now))
    return registry


def test_before_any_poll_only_info_is_exported() -> None:
    registry = registry_for(StateStore([WHOLE, IOS]))
    text = generate_latest(registry).decode()
    assert (
        registry.get_sample_value(
            "braze_app_info", {"workspace": "prod", "app": "ios", "app_id": "app-ios"}
        )
        == 1
    )
    assert registry.get_sample_value("braze_exporter_build_info", {"version": "1.2.3"}) == 1
    # No value, no status, no zeros pretending to be data.
    for absent in (
        "braze_monthly_active_users",
        "braze_last_poll_success",
        "braze_poll_cycle_duration_seconds",
        "braze_api_rate_limit_remaining",
    ):
        assert absent not in text


def test_values_status_and_point_dates() -> None:
    store = StateStore([WHOLE, IOS, WEB])
    store.record_success(WHOLE, day_point(date(2026, 11, 27), 900), now=1000.0)
    store.record_success(IOS, day_point(date(2026, 11, 26), 600), now=1001.0)
    store.record_failure(WEB, "poll failed: status=500", 0.0)  # never succeeded: status only
    store.record_rate_limit("prod", RateLimitInfo(250000, 249990, 1_800_003_600.0))
    store.record_cycle(1.5)
    registry = registry_for(store)
    get = registry.get_sample_value
    assert get("braze_workspace_monthly_active_users", {"workspace": "prod"}) == 900
    assert get("braze_monthly_active_users", {"workspace": "prod", "app": "ios"}) == 600
    assert get("braze_monthly_active_users", {"workspace": "prod", "app": "web"}) is None
    whole = {"workspace": "prod", "app": "", "kpi": "mau"}  # app="": Prometheus drops it
    assert get("braze_kpi_point_timestamp_seconds", whole) == 1_795_737_600  # 2026-11-27T00:00Z
    assert (
        get("braze_kpi_point_timestamp_seconds", {"workspace": "prod", "app": "ios", "kpi": "mau"})
        == 1_795_651_200
    )
    assert get("braze_last_poll_success", {"workspace": "prod", "app": "web", "kpi": "mau"}) == 0
    assert get("braze_last_poll_success", {"workspace": "prod", "app": "ios", "kpi": "mau"}) == 1
    assert (
        get(
            "braze_last_success_timestamp_seconds",
            {"workspace": "prod", "app": "ios", "kpi": "mau"},
        )
        == 1001.0
    )
    assert get("braze_api_rate_limit_remaining", {"workspace": "prod"}) == 249990
    assert get("braze_api_rate_limit_reset_timestamp_seconds", {"workspace": "prod"}) == (
        1_800_003_600
    )
    assert get("braze_poll_cycle_duration_seconds") == 1.5


def test_help_says_values_are_cached() -> None:
    store = StateStore([WHOLE, IOS])
    store.record_success(WHOLE, day_point(date(2026, 11, 27), 1), now=1.0)
    store.record_success(IOS, day_point(date(2026, 11, 27), 1), now=1.0)
    help_lines = {
        line.split()[2]: line
        for line in generate_latest(registry_for(store)).decode().splitlines()
        if line.startswith("# HELP")
    }
    for name in (
        "braze_monthly_active_users",
        "braze_workspace_monthly_active_users",
        "braze_kpi_point_timestamp_seconds",
    ):
        assert "scrapes never call Braze" in help_lines[name]


def test_each_scrape_reflects_the_latest_state() -> None:
    store = StateStore([IOS])
    registry = registry_for(store)
    store.record_success(IOS, day_point(date(2026, 11, 27), 1), now=1.0)
    labels = {"workspace": "prod", "app": "ios"}
    assert registry.get_sample_value("braze_monthly_active_users", labels) == 1
    store.record_success(IOS, day_point(date(2026, 11, 28), 2), now=2.0)
    assert registry.get_sample_value("braze_monthly_active_users", labels) == 2
    store.set_series([])
    assert registry.get_sample_value("braze_monthly_active_users", labels) is None
    assert registry.get_sample_value("braze_app_info", {**labels, "app_id": "app-ios"}) is None


def test_every_kind_has_its_own_families_and_the_shared_ones_carry_kpi() -> None:
    store = StateStore(
        [
            Series("prod", app, app and f"app-{app}", kpi)
            for kpi in SUPPORTED_KPIS.values()
            for app in (None, "ios")
        ]
    )
    for number, series in enumerate(store.snapshot().series):
        store.record_success(series, day_point(date(2026, 11, 27), number), now=1.0)
    registry = registry_for(store)
    get = registry.get_sample_value
    for number, series in enumerate(store.snapshot().series):
        kpi = series.kpi
        if series.app is None:
            assert get(kpi.workspace_metric, {"workspace": "prod"}) == number
        else:
            assert get(kpi.app_metric, {"workspace": "prod", "app": "ios"}) == number
        labels = {"workspace": "prod", "app": series.app or "", "kpi": kpi.name}
        assert get("braze_last_poll_success", labels) == 1
    names = {kpi.app_metric for kpi in SUPPORTED_KPIS.values()}
    assert names == {
        "braze_monthly_active_users",
        "braze_daily_active_users",
        "braze_daily_new_users",
        "braze_daily_uninstalls",
        "braze_daily_sessions",
        "braze_hourly_sessions",
    }


def test_families_have_fixed_label_names_and_are_described() -> None:
    store = StateStore([WHOLE, IOS])
    store.record_success(WHOLE, day_point(date(2026, 11, 27), 1), now=1.0)
    store.record_success(IOS, day_point(date(2026, 11, 27), 1), now=1.0)
    store.record_failure(WEB, "poll failed: status=500", 0.0)
    store.record_pause("prod", 1e12)
    for collector in (BrazeCollector(store, "1.2.3"), RateLimitPauseCollector(store)):
        described = {family.name for family in collector.describe()}
        collected = list(collector.collect())
        assert {family.name for family in collected} <= described
        for family in collected:
            label_sets = {tuple(sorted(sample.labels)) for sample in family.samples}
            assert len(label_sets) == 1, family.name


def test_rate_limit_pause_shows_while_it_lasts() -> None:
    store = StateStore([WHOLE, Series("stage", None, None, MAU)])
    store.record_pause("prod", 1_000.0)
    paused = "braze_api_rate_limit_paused"
    assert registry_for(store, now=999.0).get_sample_value(paused, {"workspace": "prod"}) == 1
    assert registry_for(store, now=999.0).get_sample_value(paused, {"workspace": "stage"}) == 0
    assert registry_for(store, now=1_000.0).get_sample_value(paused, {"workspace": "prod"}) == 0


def test_an_hourly_point_is_stamped_with_the_start_of_its_hour() -> None:
    hourly = Series("prod", "ios", "app-ios", SESSIONS_HOURLY)
    store = StateStore([hourly])
    start = datetime(2026, 11, 1, 1, tzinfo=ZoneInfo("America/New_York"), fold=1)  # 2nd 1 a.m.
    store.record_success(hourly, hour_point(start, 42), now=1.0)
    get = registry_for(store).get_sample_value
    assert get("braze_hourly_sessions", {"workspace": "prod", "app": "ios"}) == 42
    labels = {"workspace": "prod", "app": "ios", "kpi": "sessions_hourly"}
    assert get("braze_kpi_point_timestamp_seconds", labels) == start.timestamp() == 1_793_512_800
