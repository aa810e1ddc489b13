"""The Prometheus view of the state store: fresh metric families on every scrape, no Braze calls."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.kpis import SUPPORTED_KPIS
from exporter.state import Snapshot, StateStore

_CACHED = "Cached from the last successful Braze poll; scrapes never call Braze."

HELP: dict[str, str] = {
    **{
        name: f"{kpi.description}, newest daily point{scope}. {_CACHED}"
        for kpi in SUPPORTED_KPIS.values()
        for name, scope in (
            (kpi.app_metric, " of one app"),
            (kpi.workspace_metric, " of the whole workspace"),
        )
    },
    "braze_kpi_point_timestamp_seconds": (
        f"Day of the newest KPI point, as the Unix time of its midnight UTC. {_CACHED}"
    ),
    "braze_app_info": "Braze apps polled by the exporter, with their app id; always 1.",
    "braze_last_poll_success": "1 if the last poll of the series succeeded, 0 if it failed.",
    "braze_last_success_timestamp_seconds": "Unix time of the last successful poll of the series.",
    "braze_api_rate_limit_remaining": (
        "Requests left in the workspace's Braze rate-limit window, from X-RateLimit-Remaining "
        "(the lowest seen in the current window)."
    ),
    "braze_api_rate_limit_reset_timestamp_seconds": (
        "Unix time at which the workspace's Braze rate-limit window resets "
        "(last X-RateLimit-Reset)."
    ),
    "braze_poll_cycle_duration_seconds": "Time taken by the last complete poll cycle.",
    "braze_exporter_build_info": "Build information of braze-exporter; always 1.",
}


class BrazeCollector(Collector):
    def __init__(self, store: StateStore, version: str) -> None:
        self._store = store
        self._version = version

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        snapshot = self._store.snapshot()
        _add_series(families, snapshot)
        _add_rate_limits(families, snapshot)
        if snapshot.last_cycle_seconds is not None:
            families.add("braze_poll_cycle_duration_seconds", {}, snapshot.last_cycle_seconds)
        families.add("braze_exporter_build_info", {"version": self._version}, 1)
        return iter(families.all())


class _Families:
    """Gauge families built during one scrape, in first-use order, only those with samples."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        if name not in self._families:
            self._families[name] = GaugeMetricFamily(name, HELP[name])
        self._families[name].add_sample(name, labels, value)

    def all(self) -> list[Metric]:
        return list(self._families.values())


def _add_series(families: _Families, snapshot: Snapshot) -> None:
    apps_seen: set[tuple[str, str]] = set()
    for series, state in snapshot.series.items():
        labels = {"workspace": series.workspace}
        if series.app is not None:
            labels["app"] = series.app
            if (series.workspace, series.app) not in apps_seen:
                apps_seen.add((series.workspace, series.app))
                families.add("braze_app_info", {**labels, "app_id": str(series.app_id)}, 1)
        with_kpi = {**labels, "kpi": series.kpi.name}
        if state.point is not None:
            kpi = series.kpi
            families.add(
                kpi.app_metric if series.app else kpi.workspace_metric, labels, state.point.value
            )
            families.add(
                "braze_kpi_point_timestamp_seconds", with_kpi, _midnight_utc(state.point.day)
            )
        if state.last_poll_success is not None:
            families.add("braze_last_poll_success", with_kpi, float(state.last_poll_success))
        if state.last_success_time is not None:
            families.add("braze_last_success_timestamp_seconds", with_kpi, state.last_success_time)


def _add_rate_limits(families: _Families, snapshot: Snapshot) -> None:
    for workspace, limits in snapshot.rate_limits.items():
        labels = {"workspace": workspace}
        if limits.remaining is not None:
            families.add("braze_api_rate_limit_remaining", labels, limits.remaining)
        if limits.reset_at is not None:
            families.add("braze_api_rate_limit_reset_timestamp_seconds", labels, limits.reset_at)


def _midnight_utc(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
