"""What the last polls found: the newest good point and poll status per series.

The poller writes, the collector reads. Every write swaps in a new immutable `Snapshot`
under a lock, so a scrape takes a consistent view without copying or locking.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.braze import KpiPoint, RateLimitInfo
from exporter.series import Series


@dataclass(frozen=True)
class SeriesState:
    point: KpiPoint | None = None  # the newest good point; kept when a later poll fails
    last_poll_success: bool | None = None  # None until the series was first polled
    last_success_time: float | None = None  # Unix time of the last successful poll


@dataclass(frozen=True)
class Snapshot:
    series: Mapping[Series, SeriesState] = field(default_factory=lambda: MappingProxyType({}))
    rate_limits: Mapping[str, RateLimitInfo] = field(default_factory=lambda: MappingProxyType({}))
    last_cycle_seconds: float | None = None
    cycles_completed: int = 0


class StateStore:
    def __init__(self, series: Iterable[Series] = ()) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self.set_series(series)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def set_series(self, series: Iterable[Series]) -> None:
        """Track exactly these series: new ones start empty, dropped ones are forgotten."""
        with self._lock:
            old = self._snapshot.series
            kept = {s: old.get(s, SeriesState()) for s in series}
            workspaces = {s.workspace for s in kept}
            limits = {w: i for w, i in self._snapshot.rate_limits.items() if w in workspaces}
            self._swap(series=MappingProxyType(kept), rate_limits=MappingProxyType(limits))

    def record_success(self, series: Series, point: KpiPoint, now: float) -> None:
        """Store the point unless an older day than the one held (a short answer from Braze)."""
        with self._lock:
            previous = self._snapshot.series.get(series)
            if previous is None:  # a series dropped meanwhile stays dropped
                return
            if previous.point is not None and previous.point.day > point.day:
                point = previous.point
            self._put(series, SeriesState(point, True, now))

    def record_failure(self, series: Series) -> None:
        with self._lock:
            previous = self._snapshot.series.get(series)
            if previous is not None:
                self._put(series, dataclasses.replace(previous, last_poll_success=False))

    def record_rate_limit(self, workspace: str, info: RateLimitInfo) -> None:
        """Keep the newest headers. Concurrent answers arrive in any order, but within one
        window (same reset time) the lowest remaining count is the newest."""
        with self._lock:
            held = self._snapshot.rate_limits.get(workspace)
            if (
                held is not None
                and held.reset_at == info.reset_at
                and held.remaining is not None
                and (info.remaining is None or info.remaining > held.remaining)
            ):
                info = dataclasses.replace(info, remaining=held.remaining)
            limits = {**self._snapshot.rate_limits, workspace: info}
            self._swap(rate_limits=MappingProxyType(limits))

    def record_cycle(self, seconds: float) -> None:
        with self._lock:
            done = self._snapshot.cycles_completed + 1
            self._swap(last_cycle_seconds=seconds, cycles_completed=done)

    def _put(self, series: Series, state: SeriesState) -> None:
        self._swap(series=MappingProxyType({**self._snapshot.series, series: state}))

    def _swap(self, **changes: object) -> None:
        self._snapshot = dataclasses.replace(self._snapshot, **changes)  # type: ignore[arg-type]
