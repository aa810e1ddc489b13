"""The poll cycle: which series to ask Braze for, how many at once, how long to wait for each,
and what each answer does to the stored state. Scheduled as one APScheduler interval job that
never runs twice at once, with a watchdog that keeps it on time when the wall clock steps."""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.braze import BrazeClient, BrazeError, CancelledError, PausedError, RetryPolicy
from exporter.series import Series
from exporter.state import StateStore
from exporter.values import KpiPoint

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # also: no answer within the limits, or not sent for want of time
    SKIPPED = "skipped"  # nothing sent: the workspace is rate limited; its state is kept


@dataclass(frozen=True)
class Limits:
    """How long the poller waits, in seconds; `limits_for` derives them from the config."""

    series: float  # for one series, from the start of its poll
    cycle: float  # for any series, from the start of the cycle
    stalled: float  # without a completed cycle before the poller is not live


CYCLE_SHARE_OF_INTERVAL = 0.9
# The cycle's thread waits for answers no longer than this at a time: with --once it is the
# main thread, where Python runs the handler of a signal another thread caught.
WAKE_SECONDS = 0.5
STALLED_INTERVALS = 3


def limits_for(interval: float, timeout: float, retry: RetryPolicy) -> Limits:
    """A series is waited for as long as its poll takes when every attempt runs into the
    timeout: all attempts plus the longest backoff between them (31.5 s with a 10 s timeout).
    A cycle waits for nothing past 90 % of the interval, so that the next one starts on time.
    The poller is not live once no cycle has completed for three intervals plus that 90 %."""
    backoff = sum(retry.ceiling(n) for n in range(retry.attempts - 1))
    cycle = CYCLE_SHARE_OF_INTERVAL * interval
    return Limits(
        series=retry.attempts * timeout + backoff,
        cycle=cycle,
        stalled=STALLED_INTERVALS * interval + cycle,
    )


DEFAULT_LIMITS = limits_for(900.0, 10.0, RetryPolicy())  # those of the default config


@dataclass(frozen=True)
class Plan:
    """What the poller polls and how; replaced as a whole when the config is reloaded."""

    clients: Mapping[str, BrazeClient]  # by workspace name
    series: tuple[Series, ...]
    length: int
    concurrency: int
    limits: Limits


@dataclass(frozen=True)
class _Answer:
    cycle: int
    series: Series
    result: KpiPoint | Exception


class Poller:
    """Polls every series once a cycle, each in a thread of its own.

    Threads rather than a fixed pool: a poll that outlives its limit is abandoned (the series
    counts as failed) and its slot is given to the next series, however long the stuck thread
    goes on. A series is not polled again while its abandoned poll is still running, so no more
    than one thread per series is ever stuck. The threads are daemon threads: a stuck one does
    not hold up the exit."""

    def __init__(
        self,
        store: StateStore,
        clients: Mapping[str, BrazeClient],
        series: Sequence[Series],
        *,
        length: int,
        concurrency: int,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._plan = Plan(dict(clients), tuple(series), length, concurrency, limits)
        self._clock = clock
        self._monotonic = monotonic
        self._running = threading.Lock()
        self._running_new_series = False  # the running round polls only new series
        self._closed = threading.Event()
        self._answers: queue.SimpleQueue[_Answer | None] = queue.SimpleQueue()  # None: closed
        self._cycle_number = 0
        self._threads_changed = threading.Condition()
        self._unanswered: set[Series] = set()  # a poll thread is running, abandoned or not
        self._last_completed = monotonic()  # or the start, until a cycle completes

    @property
    def plan(self) -> Plan:
        return self._plan

    def set_plan(self, plan: Plan) -> None:
        """Poll by `plan` from the next cycle on; a running cycle finishes by its own plan."""
        self._plan = plan

    def run_cycle(self) -> Counter[Outcome] | None:
        """Poll every series once; None if the previous cycle is still running or if the
        poller was closed meanwhile."""
        return self._run(None)

    def poll_new_series(self, series: Collection[Series]) -> Counter[Outcome] | None:
        """Poll these series of the plan at once (a reload added them), or as soon as a
        running cycle ends; this round does not count as a cycle."""
        return self._run(frozenset(series))

    def _run(self, only: frozenset[Series] | None) -> Counter[Outcome] | None:
        if not self._acquire(new_series_only=only is not None, wait=self._plan.limits.cycle):
            log.warning("poll cycle skipped: the previous one is still running")
            return None
        try:
            if self._closed.is_set():
                return None
            plan = self._plan  # read once the turn is taken: a reload may come while waiting
            started = self._monotonic()
            planned = [s for s in plan.series if only is None or s in only]
            to_poll = self._series_to_poll(plan, planned)
            outcomes = self._poll_all(plan, to_poll, started)
            if outcomes is None:
                log.info("poll cycle cancelled: the exporter is stopping")
                return None
            if not_polled := len(planned) - len(to_poll):
                outcomes[Outcome.SKIPPED] += not_polled
            seconds = self._monotonic() - started
            if only is None:
                self._last_completed = started + seconds
                self._store.record_cycle(seconds)
            log.info(
                "poll cycle finished" if only is None else "poll of new series finished",
                extra={"duration_seconds": round(seconds, 3)}
                | {outcome.value: outcomes[outcome] for outcome in Outcome},
            )
            return outcomes
        finally:
            self._running.release()

    def _acquire(self, *, new_series_only: bool, wait: float) -> bool:
        """Take the turn to poll. A cycle that finds another running gives up (the scheduler
        runs the next one on time), except behind a round of new series, which is short; a
        round of new series waits for a running cycle."""
        if not self._running.acquire(blocking=False) and not (
            (new_series_only or self._running_new_series) and self._running.acquire(timeout=wait)
        ):
            return False
        self._running_new_series = new_series_only
        return True

    def is_live(self) -> bool:
        """Whether a cycle has completed (or the poller was made) within `limits.stalled`."""
        return self._monotonic() - self._last_completed < self._plan.limits.stalled

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a running cycle to end and every poll thread, even
        an abandoned one, to return; True if they all did."""
        deadline = time.monotonic() + timeout
        if not self._running.acquire(timeout=timeout):
            return False
        self._running.release()
        with self._threads_changed:
            return self._threads_changed.wait_for(
                lambda: not self._unanswered, max(0.0, deadline - time.monotonic())
            )

    def close(self) -> None:
        """End a running cycle at once, stop waiting for retries and start no more polls (does
        not wait for the poll threads)."""
        self._closed.set()
        for client in self._plan.clients.values():
            client.close()
        self._answers.put(None)

    def _series_to_poll(self, plan: Plan, planned: Sequence[Series]) -> list[Series]:
        """The planned series but those of workspaces still paused by a 429 (logged once)."""
        paused = set()
        for name, client in plan.clients.items():
            if resume_at := client.paused_until:
                paused.add(name)
                log.warning(
                    "workspace skipped: rate limited by Braze",
                    extra={"workspace": name, "resume_at": _iso(resume_at)},
                )
        return [s for s in planned if s.workspace not in paused]

    def _poll_all(
        self, plan: Plan, to_poll: Sequence[Series], started: float
    ) -> Counter[Outcome] | None:
        """Poll `to_poll`, at most `concurrency` at once, within the limits; None if the poller
        was closed meanwhile."""
        self._cycle_number += 1
        cycle_ends = started + plan.limits.cycle
        waiting = deque(to_poll)
        in_flight: dict[Series, tuple[float, float]] = {}  # its start, when to give up on it
        outcomes: Counter[Outcome] = Counter()
        while waiting or in_flight:
            if self._closed.is_set():
                return None
            now = self._monotonic()
            while waiting and len(in_flight) < plan.concurrency:
                series = waiting.popleft()
                if now >= cycle_ends:
                    outcomes[self._fail(series, "poll not sent: the cycle ran out of time")] += 1
                elif not self._start_poll(plan, series):
                    message = "poll not sent: the abandoned poll of an earlier cycle still runs"
                    outcomes[self._fail(series, message)] += 1
                else:
                    in_flight[series] = (now, min(now + plan.limits.series, cycle_ends))
            for series, (since, give_up) in list(in_flight.items()):
                if now >= give_up:
                    del in_flight[series]
                    message, waited = "poll abandoned: no answer in time", round(now - since, 3)
                    outcomes[self._fail(series, message, waited_seconds=waited)] += 1
            if not in_flight:
                continue
            next_give_up = min(t for _, t in in_flight.values())
            try:
                answer = self._answers.get(timeout=min(next_give_up - now, WAKE_SECONDS))
            except queue.Empty:
                continue
            if answer is None:
                return None
            if answer.cycle == self._cycle_number and answer.series in in_flight:
                del in_flight[answer.series]
                outcomes[self._settle(answer.series, answer.result)] += 1
        return outcomes

    def _start_poll(self, plan: Plan, series: Series) -> bool:
        """Start polling `series` in a thread of its own, unless an earlier poll of it runs."""
        with self._threads_changed:
            if series in self._unanswered:
                return False
            self._unanswered.add(series)
        threading.Thread(
            target=self._poll,
            args=(self._cycle_number, series, plan),
            name=f"poll {series.workspace}/{series.app or ''}/{series.kpi.name}",
            daemon=True,
        ).start()
        return True

    def _poll(self, cycle: int, series: Series, plan: Plan) -> None:
        """In the poll's own thread: ask Braze, hand the result to the cycle."""
        result: KpiPoint | Exception
        try:
            result = plan.clients[series.workspace].newest_point(
                series.kpi, plan.length, series.app_id
            )
        except Exception as exc:  # judged by the cycle, along with the answers
            result = exc
        with self._threads_changed:
            self._unanswered.discard(series)
            self._threads_changed.notify_all()
        self._answers.put(_Answer(cycle, series, result))

    def _settle(self, series: Series, result: KpiPoint | Exception) -> Outcome:
        """Record what a poll brought back."""
        if isinstance(result, (PausedError, CancelledError)):
            return Outcome.SKIPPED
        if isinstance(result, BrazeError):
            fields = {"status": result.code, "error": result.message}
            if result.code in ("401", "403"):  # a key may lack one kind's permission only
                fields["needs_permission"] = series.kpi.permission
            return self._fail(series, "poll failed", **fields)
        if isinstance(result, Exception):  # a bug must not stop the other series or the daemon
            self._store.record_failure(series, "unexpected error (see the log)", self._clock())
            log.error("poll failed unexpectedly", exc_info=result, extra=series.describe())
            return Outcome.FAILED
        self._store.record_success(series, result, self._clock())
        log.debug(
            "poll succeeded",
            extra=series.describe()
            | {"period_start": result.start.isoformat(), "value": result.value},
        )
        return Outcome.SUCCEEDED

    def _fail(self, series: Series, message: str, **fields: object) -> Outcome:
        details = ", ".join(f"{name}={value}" for name, value in fields.items())
        error = f"{message}: {details}" if details else message
        self._store.record_failure(series, error, self._clock())
        log.warning(message, extra=series.describe() | fields)
        return Outcome.FAILED


ALIGNMENT_OFFSET_SECONDS = 60.0


def schedule(poller: Poller, interval_seconds: float) -> BackgroundScheduler:
    """A scheduler (not started yet) that runs a first cycle at its start, then cycles on a
    fixed grid of the wall clock: every interval since the Unix epoch, plus one minute.

    With an interval that divides an hour (the default 15m), cycles run at :01, :16, :31
    and :46, so a new hour of sessions arrives a minute after it ends, whenever the exporter
    was started. Restarts and replicas keep the same grid, so the hour held now and the one
    held a week earlier turn over at the same minute. A cycle that overruns the interval is
    not started twice. Run a `ClockWatchdog` beside it: the grid is one of the wall clock."""
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_job(
        poller.run_cycle,
        _grid(interval_seconds),
        next_run_time=datetime.now(timezone.utc),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="poll",
        name="poll Braze",
    )
    return scheduler


def reschedule(scheduler: BaseScheduler, interval_seconds: float) -> None:
    """Put the poll job on the grid of a new interval (a reload changed it)."""
    scheduler.reschedule_job("poll", trigger=_grid(interval_seconds))


def next_poll(scheduler: BaseScheduler) -> float | None:
    """Unix time of the next scheduled cycle, if one is scheduled."""
    job = scheduler.get_job("poll")
    planned = getattr(job, "next_run_time", None)
    return None if planned is None else float(planned.timestamp())


def _grid(interval_seconds: float) -> IntervalTrigger:
    grid_start = datetime.fromtimestamp(ALIGNMENT_OFFSET_SECONDS % interval_seconds, timezone.utc)
    return _GridTrigger(seconds=interval_seconds, start_date=grid_start, timezone=timezone.utc)


class _GridTrigger(IntervalTrigger):  # type: ignore[misc]  # APScheduler 3 has no types
    """An interval trigger whose runs stay on its grid after a run off it (the first cycle, at
    start-up): APScheduler's own adds the interval to the previous run, wherever it was."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            now = max(now, previous_fire_time + _JUST_AFTER)
        return super().get_next_fire_time(None, now)  # type: ignore[no-any-return]


_JUST_AFTER = timedelta(microseconds=1)


class ClockWatchdog:
    """Keeps a scheduler's jobs on time when the wall clock steps back.

    APScheduler holds each job's next run as a wall-clock time: after a step back of an hour,
    the next run is an hour further away. The watchdog compares the wall clock with the
    monotonic one every `period` seconds; when their difference jumps by `tolerance` or more,
    it logs the step and, if it went back, moves each job's next run to the first time its
    trigger gives after the new wall time (for the poll job: the next point of its grid, at
    most one interval away). A step forward needs nothing: the scheduler measures its waits in
    real time, so it wakes when the next run was due and runs it (a missed one once)."""

    def __init__(
        self,
        scheduler: BaseScheduler,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        period: float = 1.0,
        tolerance: float = 1.0,
    ) -> None:
        self._scheduler = scheduler
        self._wall = wall
        self._monotonic = monotonic
        self._period = period
        self._tolerance = tolerance
        self._offset = wall() - monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="clock watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> float:
        """The step of the wall clock since the last check in seconds (0.0: none); after a step
        back, the jobs are rescheduled."""
        offset = self._wall() - self._monotonic()
        step, self._offset = offset - self._offset, offset
        if abs(step) < self._tolerance:
            return 0.0
        log.warning("wall clock stepped", extra={"step_seconds": round(step, 3)})
        if step < 0:
            self._bring_jobs_forward()
        return step

    def _watch(self) -> None:
        while not self._stopped.wait(self._period):
            self.check()

    def _bring_jobs_forward(self) -> None:
        now = datetime.fromtimestamp(self._wall(), timezone.utc)
        for job in self._scheduler.get_jobs():
            planned = getattr(job, "next_run_time", None)  # None: paused; absent: not added yet
            sooner = job.trigger.get_next_fire_time(None, now)
            if planned is not None and sooner is not None and sooner < planned:
                job.modify(next_run_time=sooner)
                log.info("job rescheduled", extra={"job": job.id, "next_run": _iso(sooner)})


def _iso(moment: float | datetime) -> str:
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.isoformat(timespec="seconds")
