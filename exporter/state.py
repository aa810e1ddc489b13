"""What the last polls found: the newest good point and poll status per series.

The poller writes, the collector reads. Each write replaces one immutable record under a
lock (constant time however many series there are) and then sets the `changed` event, the
doorbell of whoever renders the state; a reader takes a `Snapshot`, a consistent copy made
under the same lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.series import Series
from exporter.values import KpiPoint, RateLimitInfo


@dataclass(frozen=True)
class SeriesState:
    point: KpiPoint | None = None  # the newest good point; kept when a later poll fails
    last_poll_success: bool | None = None  # None until the series was first polled
    last_success_time: float | None = None  # Unix time of the last successful poll
    last_error: str | None = None  # why the last poll failed; None after a success
    last_poll_time: float | None = None  # Unix time the last poll ended, either way


@dataclass(frozen=True)
class Snapshot:
    series: Mapping[Series, SeriesState]
    rate_limits: Mapping[str, RateLimitInfo]
    paused_until: Mapping[str, float]  # every workspace: Unix time its rate-limit pause ends
    last_cycle_seconds: float | None
    cycles_completed: int


class StateStore:
    def __init__(
        self, series: Iterable[Series] = (), changed: threading.Event | None = None
    ) -> None:
        self.changed = changed or threading.Event()  # set after every write
        self._lock = threading.Lock()
        self._series: dict[Series, SeriesState] = {}
        self._rate_limits: dict[str, RateLimitInfo] = {}
        self._paused_until: dict[str, float] = {}
        self._last_cycle_seconds: float | None = None
        self._cycles_completed = 0
        self.set_series(series)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                series=MappingProxyType(dict(self._series)),
                rate_limits=MappingProxyType(dict(self._rate_limits)),
                paused_until=MappingProxyType(dict(self._paused_until)),
                last_cycle_seconds=self._last_cycle_seconds,
                cycles_completed=self._cycles_completed,
            )

    def paused_until(self) -> dict[str, float]:
        """Every workspace: Unix time its rate-limit pause ends (0.0: never paused)."""
        with self._lock:
            return dict(self._paused_until)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the lock to change the state, then ring the doorbell."""
        with self._lock:
            yield
        self.changed.set()

    @property
    def cycles_completed(self) -> int:
        return self._cycles_completed

    def set_series(self, series: Iterable[Series], start_over: Collection[str] = ()) -> None:
        """Track exactly these series, in one step: new ones start empty, dropped ones are
        forgotten, the others keep their state, except in the workspaces of `start_over`
        (they now poll another Braze instance or time zone), which start empty too."""
        with self._writing():
            kept = {s: v for s, v in self._series.items() if s.workspace not in start_over}
            self._series = {s: kept.get(s, SeriesState()) for s in series}
            workspaces = dict.fromkeys(s.workspace for s in self._series)
            self._rate_limits = {
                w: info
                for w, info in self._rate_limits.items()
                if w in workspaces and w not in start_over
            }
            self._paused_until = {
                w: 0.0 if w in start_over else self._paused_until.get(w, 0.0) for w in workspaces
            }

    def record_success(self, series: Series, point: KpiPoint, now: float) -> None:
        """Store the point unless its period is older than the one held (a short answer)."""
        with self._writing():
            previous = self._series.get(series)
            if previous is None:  # a series dropped meanwhile stays dropped
                return
            if previous.point is not None and previous.point.start > point.start:
                point = previous.point
            self._series[series] = SeriesState(point, True, now, None, now)

    def record_failure(self, series: Series, error: str, now: float) -> None:
        """The poll failed: keep the point, note why (already masked and one line)."""
        with self._writing():
            previous = self._series.get(series)
            if previous is not None:
                self._series[series] = dataclasses.replace(
                    previous, last_poll_success=False, last_error=error, last_poll_time=now
                )

    def record_rate_limit(self, workspace: str, info: RateLimitInfo) -> None:
        """Keep the newest headers. Concurrent answers arrive in any order, but within one
        window (same reset time) the lowest remaining count is the newest."""
        with self._writing():
            held = self._rate_limits.get(workspace)
            if (
                held is not None
                and held.reset_at == info.reset_at
                and held.remaining is not None
                and (info.remaining is None or info.remaining > held.remaining)
            ):
                info = dataclasses.replace(info, remaining=held.remaining)
            self._rate_limits[workspace] = info

    def record_pause(self, workspace: str, until: float) -> None:
        """The workspace sends nothing until `until` (Unix time): a 429 or an exhausted window."""
        with self._writing():
            if workspace in self._paused_until:
                self._paused_until[workspace] = max(self._paused_until[workspace], until)

    def record_cycle(self, seconds: float) -> None:
        with self._writing():
            self._last_cycle_seconds = seconds
            self._cycles_completed += 1
