from datetime import date

from prometheus_client import CollectorRegistry, generate_latest

from exporter.braze import KpiPoint, RateLimitInfo
from exporter.collector import BrazeCollector
from exporter.kpis import MAU
from exporter.series import Series
from exporter.state import StateStore

IOS = Series("prod", "ios", "app-ios", MAU)
WEB = Series("prod", "web", "app-web", MAU)
WHOLE = Series("prod", None, None, MAU)


def registry_for(store: StateStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BrazeCollector(store, "1.2.3"))
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
    store.record_success(WHOLE, KpiPoint(date(2026, 11, 27), 900), now=1000.0)
    store.record_success(IOS, KpiPoint(date(2026, 11, 26), 600), now=1001.0)
    store.record_failure(WEB)  # never succeeded: status only
    store.record_rate_limit("prod", RateLimitInfo(250000, 249990, 1_800_003_600.0))
    store.record_cycle(1.5)
    registry = registry_for(store)
    get = registry.get_sample_value
    assert get("braze_workspace_monthly_active_users", {"workspace": "prod"}) == 900
    assert get("braze_monthly_active_users", {"workspace": "prod", "app": "ios"}) == 600
    assert get("braze_monthly_active_users", {"workspace": "prod", "app": "web"}) is None
    assert get("braze_kpi_point_timestamp_seconds", {"workspace": "prod", "kpi": "mau"}) == (
        1_795_737_600  # 2026-11-27T00:00:00Z
    )
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
    store.record_success(WHOLE, KpiPoint(date(2026, 11, 27), 1), now=1.0)
    store.record_success(IOS, KpiPoint(date(2026, 11, 27), 1), now=1.0)
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
    store.record_success(IOS, KpiPoint(date(2026, 11, 27), 1), now=1.0)
    labels = {"workspace": "prod", "app": "ios"}
    assert registry.get_sample_value("braze_monthly_active_users", labels) == 1
    store.record_success(IOS, KpiPoint(date(2026, 11, 28), 2), now=2.0)
    assert registry.get_sample_value("braze_monthly_active_users", labels) == 2
    store.set_series([])
    assert registry.get_sample_value("braze_monthly_active_users", labels) is None
    assert registry.get_sample_value("braze_app_info", {**labels, "app_id": "app-ios"}) is None
