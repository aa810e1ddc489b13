"""How well the exporter serves /metrics at 1,000 series, beside a bare prometheus_client server.

Not a test: run it from the repository's root with the project's venv, `make bench` or

    .venv/bin/python bench/serving.py [--latency 0.2] [--load-generator auto|wrk|python]

It takes 75-90 s and prints a header line and a markdown table on stdout; it exits 0 when
every figure was measured (a missed goal is a "no" in the "met" column), 1 with a one-line
error when something could not be run. `--help` lists the other knobs.

Everything runs on 127.0.0.1, each in its own process: a Braze stand-in (bench/standin.py:
one workspace of 199 apps, every answer `--latency` seconds late, over HTTPS with a test CA
that the exporter trusts through REQUESTS_CA_BUNDLE, next to certifi's roots as in use); the
real CLI (`.venv/bin/braze-exporter`, a 60 s interval, default --web.max-requests, the
image's MALLOC_ARENA_MAX from the Dockerfile) polling five daily
kinds for the 199 apps and the whole workspace, i.e. 1,000 series, 16 requests at once; and,
from its first cycle's end, a bare `prometheus_client.start_http_server` (bench/baseline.py)
serving the families the exporter's /metrics held then, process_* and python_* included,
rendered again on every scrape. Both are scraped without Accept-Encoding: the same plain
text (the header gives both sizes).

The figures, in the table's order:
- throughput: /metrics requests per second under `wrk -t2 -c4 -d5s` (or, without wrk, 4
  processes each sending GETs on one keep-alive connection for 5 s), exporter and bare server
  alternately, 3 rounds each, while no poll cycle runs. The ratio is exporter ÷ bare server
  of the medians, "rounds" the spread of the rounds' ratios (paired in order); the rates are
  medians with their min-max.
- latency, 1 scraper: GETs back to back on one keep-alive connection during the first cycle,
  counting the scrapes whose answer shows that cycle still running (no
  braze_poll_cycle_duration_seconds yet). Nearest-rank percentiles.
- latency, 4 scrapers: the same on 4 threads at once during the second cycle (when the
  exporter's status page plans it), counting the scrapes begun after the stand-in saw that
  cycle's first request and answered before the cycle's end. Informational: these scrapers
  share the bench's own GIL.
- resident memory: VmRSS of the exporter's process just after its first cycle; MB = 10^6
  bytes (the stricter reading of the goal), MiB beside it. Under it, the floor: VmRSS of a
  Python process that has imported the modules the exporter serves with, and nothing more.
- first poll cycle: the exporter's own braze_poll_cycle_duration_seconds for it, against
  ceil(series / concurrency) x Braze latency, the time with no cost but Braze's latency.
- launch: from Popen to the first 200 on /metrics, trying every 5 ms.
- Braze requests: those the stand-in received per series in each cycle measured, and per
  scrape over `--scrapes` scrapes while no cycle runs.
Notes under the table report anything that may make a figure unreliable, and the exporter's
log lines (at warning and above), if any.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from children import (
    Exporter,
    StandIn,
    exporter_config,
    image_environment,
    import_floor_bytes,
    launch_exporter,
    start_baseline,
    start_standin,
)
from load import (
    BenchError,
    Latencies,
    Scrape,
    Scraper,
    latencies,
    python_requests_per_second,
    scrape_in_parallel,
    scrape_until,
    wrk_available,
    wrk_requests_per_second,
)
from report import Report, render

from exporter.poller import ALIGNMENT_OFFSET_SECONDS

BUSY_SCRAPERS = 4
SCRAPERS_LEAD = 0.5  # seconds before a planned cycle that its scrapers start
QUIET_MARGIN = 1.0  # seconds kept free before a planned cycle

T = TypeVar("T")


def grid_cycle_start(interval: float, after: float) -> float:
    """Unix time of the first poll cycle after `after` on the exporter's documented grid:
    every interval since the epoch, shifted by its alignment offset."""
    offset = ALIGNMENT_OFFSET_SECONDS % interval
    return offset + math.floor((after - offset) / interval + 1) * interval


def sleep_until(wall_time: float) -> None:
    time.sleep(max(0.0, wall_time - time.time()))


class Session:
    """The measurements of one run, in order, against running children."""

    def __init__(
        self, args: argparse.Namespace, standin: StandIn, exporter: Exporter, report: Report
    ) -> None:
        self.args = args
        self.standin = standin
        self.exporter = exporter
        self.report = report
        self.cycle_seconds: float | None = None
        self.next_cycle = math.inf

    def cycle_deadline(self) -> float:
        return time.monotonic() + 3 * self.report.ideal_cycle_seconds + 30

    def measure_first_cycle(self) -> Scrape:
        """Measures the first cycle; returns the first scrape that shows it complete."""
        scrapes = scrape_until(
            self.exporter.port, lambda s: s.cycle_seconds is not None, self.cycle_deadline()
        )
        self.report.cycle_requests.append(self.standin.count())
        self.report.rss_bytes = self.exporter.rss_bytes()
        self.next_cycle = self.planned_cycle_start()
        self.report.first_cycle = latencies(scrapes[:-1])
        self.cycle_seconds = scrapes[-1].cycle_seconds
        self.report.first_cycle_seconds = self.cycle_seconds or math.nan
        return scrapes[-1]

    def between_cycles(self, what: str, estimate: float, task: Callable[[], T]) -> tuple[T, int]:
        """`task`'s result and the Braze requests made meanwhile, run where no poll cycle is
        planned during the `estimate` seconds it takes (after sitting cycles out)."""
        while time.time() + estimate + QUIET_MARGIN > self.next_cycle:
            self.sit_out_cycle()
        before = self.standin.count()
        result = task()
        requests = self.standin.count() - before
        if requests:
            self.note(f"{requests} Braze requests during {what}: a cycle ran")
        return result, requests

    def sit_out_cycle(self) -> None:
        """Wait for the planned cycle to run; measure the first one waited for like this."""
        busy = self.measure_busy_cycle()
        self.report.busy_cycle = self.report.busy_cycle or busy
        self.next_cycle = self.planned_cycle_start()

    def planned_cycle_start(self) -> float:
        """Unix time of the next poll cycle: as the exporter plans it, which may be a second
        later (see Exporter.planned_cycle); on the documented grid if it does not say."""
        grid = grid_cycle_start(self.args.interval, time.time())
        planned = self.exporter.planned_cycle()
        if planned is None:
            self.note("the status page shows no next poll cycle: assumed the documented grid")
            return grid
        if abs(planned - grid) > 1:
            self.note(
                "the exporter's status page plans the next cycle off its documented grid of "
                f"the wall clock (every {self.args.interval} s since the epoch + "
                f"{ALIGNMENT_OFFSET_SECONDS:g} s): the bench followed the status page"
            )
        return planned

    def note(self, text: str) -> None:
        if text not in self.report.notes:
            self.report.notes.append(text)

    def measure_busy_cycle(self) -> Latencies:
        before_cycle = self.cycle_seconds
        requests_before = self.standin.count()
        given_up = threading.Event()
        sleep_until(self.next_cycle - SCRAPERS_LEAD)
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(
                scrape_in_parallel,
                self.exporter.port,
                BUSY_SCRAPERS,
                lambda s: given_up.is_set() or s.cycle_seconds != before_cycle,
                self.cycle_deadline(),
            )
            try:
                started = self.first_request_after(requests_before)
            except BenchError:
                given_up.set()
                raise
            scrapes = running.result()
        self.report.cycle_requests.append(self.standin.count() - requests_before)
        self.cycle_seconds = scrapes[-1].cycle_seconds
        return latencies(
            [s for s in scrapes if s.started >= started and s.cycle_seconds == before_cycle]
        )

    def first_request_after(self, count: int) -> float:
        """time.monotonic() when the stand-in's count first passes `count` (polled)."""
        deadline = time.time() + SCRAPERS_LEAD + 10
        while self.standin.count() <= count:
            if time.time() > deadline:
                raise BenchError("no poll cycle started within 10 s of its planned time")
            time.sleep(0.01)
        return time.monotonic()

    def measure_requests_per_scrape(self) -> None:
        assert self.report.first_cycle is not None
        estimate = self.args.scrapes * self.report.first_cycle.p50_ms / 1000 * 2 + 1
        _, requests = self.between_cycles(f"{self.args.scrapes} scrapes", estimate, self.scrape)
        self.report.scrapes = self.args.scrapes
        self.report.requests_during_scrapes = requests

    def scrape(self) -> None:
        """`--scrapes` scrapes in a row on one connection."""
        scraper = Scraper(self.exporter.port)
        try:
            for _ in range(self.args.scrapes):
                scraper.scrape()
        finally:
            scraper.close()

    def measure_throughput(self, baseline_port: int) -> None:
        """Rounds alternating between the exporter and the bare server."""
        servers = (
            ("exporter", self.exporter.port, self.report.exporter_rates),
            ("bare server", baseline_port, self.report.baseline_rates),
        )
        for round_number in range(1, self.args.rounds + 1):
            for name, port, rates in servers:
                rate, _ = self.between_cycles(
                    f"throughput round {round_number} ({name})",
                    self.args.duration + 1,
                    functools.partial(self.requests_per_second, port),
                )
                rates.append(rate)

    def requests_per_second(self, port: int) -> float:
        if self.report.load_generator == "wrk":
            return wrk_requests_per_second(port, self.args.duration)
        return python_requests_per_second(port, self.args.duration)


def measure(session: Session, stack: contextlib.ExitStack, folder: Path) -> None:
    report = session.report
    after_first_cycle = session.measure_first_cycle()
    report.exposition_bytes = len(after_first_cycle.body)
    exposition = folder / "exposition.prom"
    exposition.write_bytes(after_first_cycle.body)
    baseline_port = start_baseline(stack, exposition)
    baseline = Scraper(baseline_port)
    report.baseline_bytes = len(baseline.scrape().body)
    baseline.close()
    session.measure_requests_per_scrape()
    session.measure_throughput(baseline_port)
    if report.busy_cycle is None:
        session.sit_out_cycle()


def log_notes(exporter: Exporter) -> list[str]:
    logged = exporter.logged_lines()
    if not logged:
        return []
    return [f"the exporter logged {len(logged)} lines at warning or above; the first: {logged[0]}"]


def choose_load_generator(wanted: str) -> str:
    if wanted == "auto":
        return "wrk" if wrk_available() else "python"
    if wanted == "wrk" and not wrk_available():
        raise BenchError("--load-generator=wrk, but wrk is not on PATH")
    return wanted


def run(args: argparse.Namespace) -> Report:
    report = Report(
        latency=args.latency,
        concurrency=args.concurrency,
        load_generator=choose_load_generator(args.load_generator),
        round_seconds=args.duration,
        busy_scrapers=BUSY_SCRAPERS,
    )
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-")))
        ca_file = folder / "braze-ca.pem"
        standin = start_standin(stack, args.latency, ca_file)
        config = exporter_config(standin.url, args.interval, args.concurrency)
        environment = {**image_environment(), "REQUESTS_CA_BUNDLE": str(ca_file)}
        report.environment = image_environment()
        report.import_floor_bytes = import_floor_bytes(environment)
        exporter, report.launch_seconds = launch_exporter(stack, folder, config, environment)
        try:
            measure(Session(args, standin, exporter, report), stack, folder)
        except (OSError, http.client.HTTPException) as error:
            raise BenchError(f"{error}{exporter.exit_note()}") from error
        except BenchError as error:
            raise BenchError(f"{error}{exporter.exit_note()}") from None
        report.notes += log_notes(exporter)
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="Braze's answer time, s")
    parser.add_argument("--concurrency", type=int, default=16, help="poll.concurrency")
    parser.add_argument("--interval", type=int, default=60, help="poll.interval, s")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes counting requests")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per server")
    parser.add_argument("--duration", type=int, default=5, help="seconds per round")
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk if it is on PATH, else the Python one",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    try:
        report = run(args)
    except (BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"bench/serving.py: {error}", file=sys.stderr)
        return 1
    print(render(report, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
