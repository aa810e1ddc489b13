"""Progress of long work (the backfill): a bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)

_BAR_WIDTH = 30
_LOG_EVERY_SECONDS = 10.0


class Progress:
    """Series done out of the total, requests made, and time left. Thread-safe."""

    def __init__(
        self,
        total_series: int,
        planned_requests: int,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total_series
        self._planned = max(1, planned_requests)
        self._stream = stream
        self._tty = stream.isatty()
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._lock = threading.Lock()
        self.series_done = 0
        self.requests = 0

    def request_made(self) -> None:
        with self._lock:
            self.requests += 1
            self._show()

    def series_finished(self) -> None:
        with self._lock:
            self.series_done += 1
            self._show(force_log=self.series_done == self._total)

    def close(self) -> None:
        with self._lock:
            if self._tty:
                self._stream.write("\n")
                self._stream.flush()

    def line(self) -> str:
        """The progress as one line: what is done, and an estimate of the time left."""
        left = self.seconds_left()
        eta = "?" if left is None else _duration(left)
        return (
            f"{self.series_done}/{self._total} series, {self.requests} requests, about {eta} left"
        )

    def seconds_left(self) -> float | None:
        """From the pace of requests so far against the requests planned (paging included)."""
        if self.requests == 0:
            return None
        elapsed = self._clock() - self._started
        remaining = max(0, self._planned - self.requests)
        return elapsed / self.requests * remaining

    def _show(self, force_log: bool = False) -> None:
        if self._tty:
            done = min(1.0, self.requests / self._planned)
            filled = round(done * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\r[{bar}] {self.line()}\033[K")
            self._stream.flush()
            return
        now = self._clock()
        if force_log or now - self._last_log >= _LOG_EVERY_SECONDS:
            self._last_log = now
            log.info(
                "backfill progress",
                extra={
                    "series_done": self.series_done,
                    "series_total": self._total,
                    "requests": self.requests,
                    "seconds_left": None if (s := self.seconds_left()) is None else round(s),
                },
            )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
