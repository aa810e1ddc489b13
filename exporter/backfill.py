"""Backfill: Braze's past data as the OpenMetrics history the live exporter would have served.

Every series (app or whole workspace, each kind) is read back over the period asked for, a
page of at most 100 points at a time, stepping Braze's `ending_at` back, through the same
client as live polling (backoff on 5xx; a 429 pauses until Braze's reset, then the page is
asked for again). Then, at every multiple of the step, each series gets the value the live
exporter would have served at that time: the newest point complete by then, a day's point
counting from the end of its day and an hour's from the end of its hour. Points are held in
memory (a few thousand per series at most); the samples, millions of lines, are written as
they are made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TextIO

from exporter.braze import (
    AttemptObserver,
    BrazeClient,
    BrazeError,
    PausedError,
    RateLimitedError,
)
from exporter.collector import FAMILIES
from exporter.config import Config, parse_duration
from exporter.kpis import SUPPORTED_KPIS, Kpi
from exporter.openmetrics import Samples, write_end, write_family
from exporter.progress import Progress
from exporter.series import Series, series_of
from exporter.values import KpiPoint

log = logging.getLogger(__name__)

MAX_DURATION_SECONDS = 730 * 86400  # two years; Braze does not document how far back it goes
MAX_STEP_SECONDS = 300  # Prometheus's lookback is 5 minutes: a longer step shows gaps
PAGE_POINTS = 100  # Braze's `length` at most
_PERIOD_SECONDS = {"day": 86400, "hour": 3600}


@dataclass(frozen=True)
class Options:
    duration: float  # seconds back from now
    step: int  # seconds between samples
    job: str
    instance: str


def parse_options(duration: str, step: str, job: str, instance: str) -> Options:
    """Check the backfill flags; ValueError with a one-line message naming the flag."""
    seconds = _duration("--backfill", duration)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(
            f"--backfill: {duration} is more than the {MAX_DURATION_SECONDS // 86400}d "
            "the exporter asks Braze for"
        )
    step_seconds = _duration("--backfill.step", step)
    if step_seconds > MAX_STEP_SECONDS or step_seconds != int(step_seconds):
        raise ValueError(
            f"--backfill.step: {step} must be whole seconds and at most 5m, so that "
            "Prometheus's 5-minute lookback never shows a gap"
        )
    for flag, value in (("--backfill.job", job), ("--backfill.instance", instance)):
        if not value.strip() or not value.isprintable():
            raise ValueError(f"{flag}: must be printable text, not {value!r}")
    return Options(seconds, int(step_seconds), job, instance)


def _duration(flag: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{flag}: must be greater than 0, got {text}")
    return seconds


@dataclass(frozen=True)
class History:
    """The complete points read for one series, oldest first, and why reading stopped early."""

    series: Series
    points: tuple[KpiPoint, ...]
    error: str | None = None


def planned_requests(series: Iterable[Series], duration: float) -> int:
    return sum(math.ceil(_points_needed(s.kpi, duration) / PAGE_POINTS) for s in series)


def _points_needed(kpi: Kpi, seconds: float) -> int:
    """Points from the one complete at the start of the period asked for to the newest."""
    return min(10**6, math.ceil(seconds / _PERIOD_SECONDS[kpi.unit]) + 2)


def read_history(
    client: BrazeClient,
    series: Series,
    since: datetime,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> History:
    """Page back from now until the point complete at `since` is in hand (or Braze has no
    older one). A failure keeps the newer points read so far."""
    points: list[KpiPoint] = []  # oldest first
    ending_at: datetime | None = None  # the first page ends now
    while True:
        end = ending_at or datetime.fromtimestamp(clock(), timezone.utc)
        length = min(PAGE_POINTS, _points_needed(series.kpi, (end - since).total_seconds()))
        try:
            page = _page(client, series, length, ending_at, sleep=sleep, clock=clock)
        except BrazeError as exc:
            return History(series, tuple(points), f"{exc.code}: {exc.message}")
        older = [p for p in page if not points or p.start < points[0].start]
        if not older:
            return History(series, tuple(points))  # nothing older: the start of Braze's data
        points[:0] = older
        oldest = points[0]
        if oldest.end <= since:
            return History(series, tuple(points))
        # MAU's page ends the day before `ending_at`'s day; the others with its period.
        boundary = oldest.end if series.kpi.one_day_behind else oldest.start
        ending_at = boundary - timedelta(seconds=1)


def _page(
    client: BrazeClient,
    series: Series,
    length: int,
    ending_at: datetime | None,
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> tuple[KpiPoint, ...]:
    """One page; while Braze rate-limits the workspace, wait for its reset and ask again."""
    while True:
        try:
            return client.complete_points(series.kpi, length, series.app_id, ending_at)
        except (RateLimitedError, PausedError) as exc:
            wait = max(0.0, exc.resume_at - clock())
            log.warning(
                "backfill paused: rate limited by Braze",
                extra=series.describe() | {"resume_in_seconds": round(wait)},
            )
            sleep(wait)


def sample_times(since: float, until: float, step: int) -> range:
    """Every multiple of `step` (Unix seconds) from `since` to `until`."""
    return range(math.ceil(since / step) * step, math.floor(until / step) * step + 1, step)


def held_points(points: Sequence[KpiPoint], times: Iterable[int]) -> Iterator[tuple[int, KpiPoint]]:
    """(t, the newest point complete at t) for each t that has one; `points` oldest first."""
    held = -1
    for t in times:
        while held + 1 < len(points) and points[held + 1].end.timestamp() <= t:
            held += 1
        if held >= 0:
            yield t, points[held]


def write_histories(
    out: TextIO, histories: Sequence[History], times: range, job: str, instance: str
) -> int:
    """Families in the live exporter's names and labels, plus job and instance; the number
    of samples written."""
    target = {"job": job, "instance": instance}

    def labels(series: Series, with_kpi: bool = False) -> dict[str, str]:
        found = {**target, "workspace": series.workspace, "app": series.app or ""}
        return found | {"kpi": series.kpi.name} if with_kpi else found

    def values(history: History) -> Samples:
        return ((t, point.value) for t, point in held_points(history.points, times))

    def starts(history: History) -> Samples:
        return ((t, point.start.timestamp()) for t, point in held_points(history.points, times))

    written = 0
    kinds = dict.fromkeys(h.series.kpi.name for h in histories)
    for kpi in (SUPPORTED_KPIS[name] for name in kinds):
        for name, whole in ((kpi.app_metric, False), (kpi.workspace_metric, True)):
            chosen = [
                h for h in histories if h.series.kpi == kpi and (h.series.app is None) == whole
            ]
            if chosen:
                written += write_family(
                    out, name, FAMILIES[name].help, ((labels(h.series), values(h)) for h in chosen)
                )
    stamp = "braze_kpi_point_timestamp_seconds"
    written += write_family(
        out, stamp, FAMILIES[stamp].help, ((labels(h.series, True), starts(h)) for h in histories)
    )
    write_end(out)
    return written


ClientFactory = Callable[[str, AttemptObserver], BrazeClient]  # (workspace, on_attempt)


def run_backfill(
    config: Config,
    make_client: ClientFactory,
    options: Options,
    out: TextIO,
    progress_stream: TextIO,
    *,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Read every series' history and write it to `out`; True if every series was read whole
    (failures are logged, naming the series, and their points so far are written too)."""
    series = series_of(config)
    now = clock()
    since = now - options.duration
    since_at = datetime.fromtimestamp(since, timezone.utc)
    progress = Progress(len(series), planned_requests(series, options.duration), progress_stream)
    clients = {
        w.name: make_client(w.name, lambda *_: progress.request_made()) for w in config.workspaces
    }
    log.info(
        "backfill started",
        extra={"series": len(series), "seconds": options.duration, "step_seconds": options.step},
    )

    def read(one: Series) -> History:
        history = read_history(clients[one.workspace], one, since_at, clock=clock)
        progress.series_finished()
        return history

    with ThreadPoolExecutor(config.poll.concurrency, thread_name_prefix="backfill") as pool:
        histories = list(pool.map(read, series))
    progress.close()
    for client in clients.values():
        client.close()
    for history in histories:
        if history.error is not None:
            log.error(
                "backfill failed",
                extra=history.series.describe()
                | {"error": history.error, "points_kept": len(history.points)},
            )
    times = sample_times(since, now, options.step)
    written = write_histories(out, histories, times, options.job, options.instance)
    out.flush()
    log.info(
        "backfill written",
        extra={"samples": written, "requests": progress.requests, "series": len(series)},
    )
    return all(history.error is None for history in histories)
