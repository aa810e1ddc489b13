"""The figures of bench/serving.py and their markdown table, each beside its goal."""

from __future__ import annotations

import math
import os
import statistics
import sys
from dataclasses import dataclass, field

from children import KPIS, SERIES
from load import PYTHON_LOAD_WORKERS, WRK_COMMAND, Latencies
from standin import APP_COUNT

Row = tuple[str, str, str, str]  # figure, measured, goal, met


@dataclass
class Report:
    latency: float
    concurrency: int
    load_generator: str  # "wrk" or "python"
    round_seconds: int
    launch_seconds: float = math.nan
    first_cycle_seconds: float = math.nan
    first_cycle: Latencies | None = None
    busy_scrapers: int = 0
    busy_cycle: Latencies | None = None
    rss_bytes: int = 0
    import_floor_bytes: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    exposition_bytes: int = 0
    baseline_bytes: int = 0
    cycle_requests: list[int] = field(default_factory=list)
    scrapes: int = 0
    requests_during_scrapes: int = 0
    exporter_rates: list[float] = field(default_factory=list)
    baseline_rates: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ideal_cycle_seconds(self) -> float:
        return math.ceil(SERIES / self.concurrency) * self.latency


def yes_no(met: bool) -> str:
    return "yes" if met else "no"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}x"


def throughput_row(report: Report) -> Row:
    exporter, baseline = report.exporter_rates, report.baseline_rates
    ratio = statistics.median(exporter) / statistics.median(baseline)
    paired = [mine / theirs for mine, theirs in zip(exporter, baseline, strict=True)]
    measured = (
        f"{ratio_text(ratio)} (rounds {ratio_text(min(paired))}-{ratio_text(max(paired))}); "
        f"exporter {rate_text(statistics.median(exporter))} req/s "
        f"({rate_text(min(exporter))}-{rate_text(max(exporter))}), bare server "
        f"{rate_text(statistics.median(baseline))} req/s "
        f"({rate_text(min(baseline))}-{rate_text(max(baseline))}); {len(exporter)} rounds each"
    )
    figure = "/metrics throughput, exporter ÷ bare prometheus_client, same families"
    return figure, measured, "≥ 3x", yes_no(ratio >= 3)


def latency_text(figures: Latencies | None) -> str:
    if figures is None:
        return "not measured"
    return (
        f"p99 {figures.p99_ms:.1f} ms (p50 {figures.p50_ms:.1f}, max {figures.max_ms:.1f}; "
        f"{figures.count} scrapes)"
    )


def latency_rows(report: Report) -> list[Row]:
    first = report.first_cycle
    return [
        (
            "/metrics latency, 1 scraper, during the first poll cycle",
            latency_text(first),
            "p99 ≤ 25 ms",
            yes_no(first is not None and first.p99_ms <= 25),
        ),
        (
            f"/metrics latency, {report.busy_scrapers} scrapers at once, during the second "
            "poll cycle",
            latency_text(report.busy_cycle),
            "-",
            "-",
        ),
    ]


def memory_row(report: Report) -> Row:
    megabytes = report.rss_bytes / 1e6
    measured = f"{megabytes:.1f} MB ({report.rss_bytes / 2**20:.1f} MiB)"
    return (
        "exporter resident memory (VmRSS) after the first cycle",
        measured,
        "≤ 45 MB",
        yes_no(megabytes <= 45),
    )


def import_floor_row(report: Report) -> Row:
    megabytes = report.import_floor_bytes / 1e6
    return (
        "of which the floor: a process that only imported the exporter's modules",
        f"{megabytes:.1f} MB ({report.import_floor_bytes / 2**20:.1f} MiB)",
        "-",
        "-",
    )


def first_cycle_row(report: Report) -> Row:
    ratio = report.first_cycle_seconds / report.ideal_cycle_seconds
    ideal = (
        f"ceil({SERIES:,} / {report.concurrency}) x {report.latency:g} s = "
        f"{report.ideal_cycle_seconds:.1f} s"
    )
    measured = f"{ratio:.2f}x ({report.first_cycle_seconds:.2f} s)"
    return f"first poll cycle ÷ ideal {ideal}", measured, "≤ 1.2x", yes_no(ratio <= 1.2)


def launch_row(report: Report) -> Row:
    measured = f"{report.launch_seconds:.2f} s"
    return (
        "launch (Popen) to /metrics answering 200",
        measured,
        "≤ 1 s",
        yes_no(report.launch_seconds <= 1),
    )


def braze_request_rows(report: Report) -> list[Row]:
    cycles = ", ".join(f"{n:,} in cycle {i}" for i, n in enumerate(report.cycle_requests, 1))
    per_scrape = report.requests_during_scrapes / report.scrapes
    return [
        (
            "Braze requests per series per healthy cycle",
            f"{report.cycle_requests[0] / SERIES:.2f} ({cycles})",
            "1",
            yes_no(all(requests == SERIES for requests in report.cycle_requests)),
        ),
        (
            "Braze requests per scrape, no cycle running",
            f"{per_scrape:.2f} ({report.requests_during_scrapes} in {report.scrapes} scrapes)",
            "0",
            yes_no(report.requests_during_scrapes == 0),
        ),
    ]


def load_generator_text(report: Report) -> str:
    if report.load_generator == "wrk":
        return f"wrk {' '.join(WRK_COMMAND)} -d{report.round_seconds}s"
    return (
        f"Python load generator ({PYTHON_LOAD_WORKERS} processes, one keep-alive connection "
        f"each, {report.round_seconds} s)"
    )


def environment_text(report: Report) -> str:
    if not report.environment:
        return "as ours"
    return " ".join(f"{name}={value}" for name, value in report.environment.items()) + (
        " (the image's)"
    )


def header(report: Report, run_seconds: float) -> str:
    return (
        f"{SERIES:,} series ({len(KPIS)} kinds, {APP_COUNT} apps + the whole workspace), "
        f"exposition {report.exposition_bytes / 1000:.1f} kB uncompressed (bare server's: "
        f"{report.baseline_bytes / 1000:.1f} kB), Braze latency {report.latency * 1000:g} ms, "
        f"Braze over HTTPS, concurrency {report.concurrency}, "
        f"exporter environment {environment_text(report)}, "
        f"load: {load_generator_text(report)}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, run {run_seconds:.0f} s"
    )


def render(report: Report, run_seconds: float) -> str:
    rows = [
        throughput_row(report),
        *latency_rows(report),
        memory_row(report),
        import_floor_row(report),
        first_cycle_row(report),
        launch_row(report),
        *braze_request_rows(report),
    ]
    lines = [
        header(report, run_seconds),
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += [f"\nNote: {note}" for note in report.notes]
    return "\n".join(lines)
