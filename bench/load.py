"""The client side of bench/serving.py: timed scrapes, latency percentiles, throughput runs."""

from __future__ import annotations

import http.client
import math
import multiprocessing
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

HOST = "127.0.0.1"
PATH = "/metrics"
CYCLE_DURATION_SAMPLE = b"\nbraze_poll_cycle_duration_seconds "
PYTHON_LOAD_WORKERS = 4  # as many connections as wrk -c4
WRK_COMMAND = ("-t2", "-c4")


class BenchError(Exception):
    """Something the bench needs could not be run or did not behave; one line for the user."""


@dataclass(frozen=True)
class Scrape:
    started: float  # time.monotonic()
    seconds: float
    body: bytes

    @property
    def cycle_seconds(self) -> float | None:
        """The exporter's braze_poll_cycle_duration_seconds; None before a cycle completed."""
        return cycle_seconds_in(self.body)


@dataclass(frozen=True)
class Latencies:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def cycle_seconds_in(body: bytes) -> float | None:
    start = body.find(CYCLE_DURATION_SAMPLE)
    if start < 0:
        return None
    value_start = start + len(CYCLE_DURATION_SAMPLE)
    return float(body[value_start : body.index(b"\n", value_start)])


class Scraper:
    """GETs of /metrics on one keep-alive connection (reopened if the server closes it)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self._connection = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def scrape(self) -> Scrape:
        started = time.monotonic()
        self._connection.request("GET", PATH)
        response = self._connection.getresponse()
        body = response.read()
        seconds = time.monotonic() - started
        if response.status != 200:
            raise BenchError(f"GET {PATH} answered {response.status}: {body[:80]!r}")
        return Scrape(started, seconds, body)

    def close(self) -> None:
        self._connection.close()


def scrape_until(port: int, done: Callable[[Scrape], bool], deadline: float) -> list[Scrape]:
    """Sequential scrapes, as fast as they come, up to the first one that is `done`
    (included). BenchError once time.monotonic() passes `deadline`."""
    scraper = Scraper(port)
    scrapes: list[Scrape] = []
    try:
        while not scrapes or not done(scrapes[-1]):
            if time.monotonic() > deadline:
                raise BenchError("gave up waiting: no scrape showed the end of the poll cycle")
            scrapes.append(scraper.scrape())
    finally:
        scraper.close()
    return scrapes


def scrape_in_parallel(
    port: int, scrapers: int, done: Callable[[Scrape], bool], deadline: float
) -> list[Scrape]:
    """`scrape_until` on `scrapers` threads at once, each with its own connection."""
    results: list[list[Scrape]] = [[] for _ in range(scrapers)]
    errors: list[BaseException] = []

    def scrape_into(slot: int) -> None:
        try:
            results[slot] = scrape_until(port, done, deadline)
        except Exception as error:  # re-raised in the calling thread below
            errors.append(error)

    threads = [threading.Thread(target=scrape_into, args=(slot,)) for slot in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [scrape for scrapes in results for scrape in scrapes]


def first_answer(port: int, alive: Callable[[], bool], timeout: float, every: float) -> float:
    """time.monotonic() of the first 200 from /metrics, trying a new connection every
    `every` seconds; BenchError if `alive()` turns false or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError(f"GET {PATH} answered no 200")
        if answers_200(port):
            return time.monotonic()
        time.sleep(every)
    raise BenchError(f"GET {PATH} answered no 200 within {timeout:g} s")


def answers_200(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=1.0)
    try:
        connection.request("GET", PATH)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def get_text(port: int, path: str) -> str:
    connection = http.client.HTTPConnection(HOST, port, timeout=10.0)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        return body.decode(errors="replace")
    finally:
        connection.close()


def latencies(scrapes: Sequence[Scrape]) -> Latencies:
    if not scrapes:
        raise BenchError("no scrape to measure: the poll cycle ended before the first one")
    ordered = sorted(scrape.seconds * 1000 for scrape in scrapes)
    return Latencies(
        count=len(ordered),
        p50_ms=nearest_rank(ordered, 50),
        p99_ms=nearest_rank(ordered, 99),
        max_ms=ordered[-1],
    )


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_requests_per_second(port: int, seconds: int) -> float:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not on PATH")
    command = [wrk, *WRK_COMMAND, f"-d{seconds}s", f"http://{HOST}:{port}{PATH}"]
    finished = subprocess.run(  # noqa: S603 (wrk found on PATH, arguments built here)
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", finished.stdout, re.MULTILINE)
    if finished.returncode != 0 or rate is None:
        raise BenchError(f"wrk failed: {(finished.stderr or finished.stdout).strip()[:200]}")
    not_ok = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", finished.stdout)
    if not_ok:
        raise BenchError(f"wrk got {not_ok.group(1)} answers other than 2xx from port {port}")
    return float(rate.group(1))


def python_requests_per_second(port: int, seconds: int) -> float:
    """wrk's measure without wrk: PYTHON_LOAD_WORKERS processes, each sending GETs on its own
    keep-alive connection for `seconds`, all started together; completed 200s per second."""
    context = multiprocessing.get_context("spawn")  # the parent has threads; never fork them
    start_together = context.Barrier(PYTHON_LOAD_WORKERS + 1)
    completed: Queue[int] = context.Queue()
    workers = [
        context.Process(target=_send_gets, args=(port, seconds, start_together, completed))
        for _ in range(PYTHON_LOAD_WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        start_together.wait(timeout=30)
        counts = [completed.get(timeout=seconds + 30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    if min(counts) < 0:
        raise BenchError(f"a load generator process failed a GET from port {port}")
    return sum(counts) / seconds


def _send_gets(port: int, seconds: int, start_together: Barrier, completed: Queue[int]) -> None:
    """Puts the number of GETs completed within `seconds`, or -1 if one failed."""
    scraper = Scraper(port)
    start_together.wait()
    deadline = time.monotonic() + seconds
    count = 0
    try:
        while True:
            scraper.scrape()
            if time.monotonic() > deadline:
                break
            count += 1
    except (OSError, http.client.HTTPException, BenchError):
        count = -1
    finally:
        scraper.close()
    completed.put(count)
