"""The Prometheus view of the state store, never calling Braze.

`BrazeCollector` builds the families from what the polls stored; they change only when the
store does, so they are rendered once per change (`exposition_cache`). `RateLimitPauseCollector`
builds the one family that also moves with the clock (a pause ends without a write), read on
every scrape. Each family has fixed label names. Whole-workspace series carry `app=""` in the
families they share with app series, which Prometheus stores as no `app` label at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.kpis import SUPPORTED_KPIS
from exporter.state import Snapshot, StateStore

_CACHED = "Cached from the last successful Braze poll; scrapes never call Braze."
_SERIES = ("workspace", "app", "kpi")
_APP = ("workspace", "app")
_WORKSPACE = ("workspace",)


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]


def _kpi_families() -> list[Family]:
    families = []
    for kpi in SUPPORTED_KPIS.values():
        period = "newest complete hour" if kpi.unit == "hour" else "newest complete day"
        families += [
            Family(kpi.app_metric, f"{kpi.description}, {period} of one app. {_CACHED}", _APP),
            Family(
                kpi.workspace_metric,
                f"{kpi.description}, {period} of the whole workspace. {_CACHED}",
                _WORKSPACE,
            ),
        ]
    return families


PAUSED = Family(
    "braze_api_rate_limit_paused",
    "1 while the workspace sends Braze nothing because of a 429 or an exhausted "
    "rate-limit window, 0 otherwise.",
    _WORKSPACE,
)

STORED: dict[str, Family] = {
    f.name: f
    for f in [
        *_kpi_families(),
        Family(
            "braze_kpi_point_timestamp_seconds",
            "Start of the period of the exported point (midnight of its day, or the start of "
            f"its hour, in the workspace's time zone), as Unix time. {_CACHED}",
            _SERIES,
        ),
        Family(
            "braze_app_info",
            "Braze apps polled by the exporter, with their app id; always 1.",
            ("workspace", "app", "app_id"),
        ),
        Family(
            "braze_last_poll_success",
            "1 if the last poll of the series succeeded, 0 if it failed.",
            _SERIES,
        ),
        Family(
            "braze_last_success_timestamp_seconds",
            "Unix time of the last successful poll of the series.",
            _SERIES,
        ),
        Family(
            "braze_api_rate_limit_remaining",
            "Requests left in the workspace's Braze rate-limit window, from "
            "X-RateLimit-Remaining (the lowest seen in the current window).",
            _WORKSPACE,
        ),
        Family(
            "braze_api_rate_limit_reset_timestamp_seconds",
            "Unix time at which the workspace's Braze rate-limit window resets "
            "(last X-RateLimit-Reset).",
            _WORKSPACE,
        ),
        Family(
            "braze_poll_cycle_duration_seconds", "Time taken by the last complete poll cycle.", ()
        ),
        Family(
            "braze_exporter_build_info",
            "Build information of braze-exporter; always 1.",
            ("version",),
        ),
    ]
}
FAMILIES: dict[str, Family] = {**STORED, PAUSED.name: PAUSED}  # every family of this module


class BrazeCollector(Collector):
    """The families of what the polls stored."""

    def __init__(self, store: StateStore, version: str) -> None:
        self._store = store
        self._version = version

    def describe(self) -> Iterator[Metric]:
        for family in STORED.values():
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        families = {family.name: _empty(family) for family in STORED.values()}
        snapshot = self._store.snapshot()
        _add_series(families, snapshot)
        _add_rate_limits(families, snapshot)
        if snapshot.last_cycle_seconds is not None:
            families["braze_poll_cycle_duration_seconds"].add_metric(
                [], snapshot.last_cycle_seconds
            )
        families["braze_exporter_build_info"].add_metric([self._version], 1)
        yield from (family for family in families.values() if family.samples)


def _add_series(families: dict[str, GaugeMetricFamily], snapshot: Snapshot) -> None:
    apps_seen: set[tuple[str, str]] = set()
    for series, state in snapshot.series.items():
        workspace, app, kpi = series.workspace, series.app or "", series.kpi
        if series.app is not None and (workspace, app) not in apps_seen:
            apps_seen.add((workspace, app))
            families["braze_app_info"].add_metric([workspace, app, str(series.app_id)], 1)
        if state.point is not None:
            if series.app is None:
                families[kpi.workspace_metric].add_metric([workspace], state.point.value)
            else:
                families[kpi.app_metric].add_metric([workspace, app], state.point.value)
            families["braze_kpi_point_timestamp_seconds"].add_metric(
                [workspace, app, kpi.name], state.point.start.timestamp()
            )
        if state.last_poll_success is not None:
            families["braze_last_poll_success"].add_metric(
                [workspace, app, kpi.name], float(state.last_poll_success)
            )
        if state.last_success_time is not None:
            families["braze_last_success_timestamp_seconds"].add_metric(
                [workspace, app, kpi.name], state.last_success_time
            )


class RateLimitPauseCollector(Collector):
    """Whether each workspace is paused by Braze's rate limit now: its pause ends with time."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        yield _empty(PAUSED)

    def collect(self) -> Iterator[Metric]:
        family, now = _empty(PAUSED), self._clock()
        for workspace, until in self._store.paused_until().items():
            family.add_metric([workspace], float(until > now))
        if family.samples:
            yield family


def _empty(family: Family) -> GaugeMetricFamily:
    return GaugeMetricFamily(family.name, family.help, labels=family.labels)


def _add_rate_limits(families: dict[str, GaugeMetricFamily], snapshot: Snapshot) -> None:
    for workspace, limits in snapshot.rate_limits.items():
        if limits.remaining is not None:
            families["braze_api_rate_limit_remaining"].add_metric([workspace], limits.remaining)
        if limits.reset_at is not None:
            families["braze_api_rate_limit_reset_timestamp_seconds"].add_metric(
                [workspace], limits.reset_at
            )
