"""The poll cycle: which series to ask Braze for, how many at once, and what each answer does
to the stored state. Scheduled as one APScheduler interval job that never runs twice at once."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from exporter.braze import BrazeClient, BrazeError, CancelledError, PausedError
from exporter.series import Series
from exporter.state import StateStore

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing sent: the workspace is rate limited; its state is kept


class Poller:
    def __init__(
        self,
        store: StateStore,
        clients: Mapping[str, BrazeClient],
        series: Sequence[Series],
        *,
        length: int,
        concurrency: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clients = clients
        self._series = tuple(series)
        self._length = length
        self._clock = clock
        self._running = threading.Lock()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll")

    def run_cycle(self) -> Counter[Outcome] | None:
        """Poll every series once; None if the previous cycle is still running or if the
        poller was closed meanwhile."""
        if not self._running.acquire(blocking=False):
            log.warning("poll cycle skipped: the previous one is still running")
            return None
        try:
            if self._closed.is_set():
                return None
            started = time.monotonic()
            to_poll = self._series_to_poll()
            try:
                outcomes = Counter(self._pool.map(self._poll, to_poll))
            except futures.CancelledError:  # close() dropped the series not yet started
                log.info("poll cycle cancelled: the exporter is stopping")
                return None
            if not_polled := len(self._series) - len(to_poll):
                outcomes[Outcome.SKIPPED] += not_polled
            seconds = time.monotonic() - started
            self._store.record_cycle(seconds)
            log.info(
                "poll cycle finished",
                extra={"duration_seconds": round(seconds, 3)}
                | {outcome.value: outcomes[outcome] for outcome in Outcome},
            )
            return outcomes
        finally:
            self._running.release()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a running cycle to end; True if none is running."""
        if self._running.acquire(timeout=timeout):
            self._running.release()
            return True
        return False

    def close(self) -> None:
        """Stop waiting for retries and release the worker threads (does not wait for them)."""
        self._closed.set()
        for client in self._clients.values():
            client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _series_to_poll(self) -> list[Series]:
        """Every series but those of workspaces still paused by a 429 (logged once a cycle)."""
        paused = set()
        for name, client in self._clients.items():
            if resume_at := client.paused_until:
                paused.add(name)
                log.warning(
                    "workspace skipped: rate limited by Braze",
                    extra={"workspace": name, "resume_at": _iso(resume_at)},
                )
        return [s for s in self._series if s.workspace not in paused]

    def _poll(self, series: Series) -> Outcome:
        try:
            point = self._clients[series.workspace].newest_point(
                series.kpi, self._length, series.app_id
            )
        except (PausedError, CancelledError):
            return Outcome.SKIPPED
        except BrazeError as exc:
            self._store.record_failure(series)
            fields = series.describe() | {"status": exc.code, "error": exc.message}
            if exc.code in ("401", "403"):  # a key may lack one kind's permission only
                fields["needs_permission"] = series.kpi.permission
            log.warning("poll failed", extra=fields)
            return Outcome.FAILED
        except Exception:  # a bug must not stop the other series or the daemon
            self._store.record_failure(series)
            log.exception("poll failed unexpectedly", extra=series.describe())
            return Outcome.FAILED
        self._store.record_success(series, point, self._clock())
        log.debug(
            "poll succeeded",
            extra=series.describe()
            | {"period_start": point.start.isoformat(), "value": point.value},
        )
        return Outcome.SUCCEEDED


ALIGNMENT_OFFSET_SECONDS = 60.0


def schedule(poller: Poller, interval_seconds: float) -> BackgroundScheduler:
    """A scheduler (not started yet) that runs a first cycle at its start, then cycles on a
    fixed grid of the wall clock: every interval since the Unix epoch, plus one minute.

    With an interval that divides an hour (the default 15m), cycles run at :01, :16, :31
    and :46, so a new hour of sessions arrives a minute after it ends, whenever the exporter
    was started. Restarts and replicas keep the same grid, so the hour held now and the one
    held a week earlier turn over at the same minute. A cycle that overruns the interval is
    not started twice."""
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    grid_start = datetime.fromtimestamp(ALIGNMENT_OFFSET_SECONDS % interval_seconds, timezone.utc)
    scheduler.add_job(
        poller.run_cycle,
        "interval",
        seconds=interval_seconds,
        start_date=grid_start,
        next_run_time=datetime.now(timezone.utc),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="poll",
        name="poll Braze",
    )
    return scheduler


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone.utc).isoformat(timespec="seconds")
