"""What `braze-exporter --backfill` costs: wall time, peak memory, Braze requests, output size.

Not a test: run it by hand, from the repository's root, with the project's venv:

    .venv/bin/python bench/backfill_footprint.py [--days 90] [--apps 19] [--step 1m]

It serves one simulated workspace of `--apps` apps plus the whole workspace (20 series per
kind by default) on loopback, and runs the real CLI twice, each writing to a temporary file
that is deleted afterwards: once with the four daily user kinds and daily sessions, once with
hourly sessions. Peak RSS is the CLI process's own (`os.wait4`, the per-child form of
`getrusage(RUSAGE_CHILDREN)`). The simulator allows 250,000 requests an hour, far more
than a run needs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from exporter.simulator import BrazeSimulator, SimApp, SimWorkspace

API_KEY = "bench-key-0123456789abcdef"
KEY_ENV = "BENCH_BRAZE_KEY"
RUNS = {
    "daily (mau, dau, new_users, uninstalls, sessions)": [
        "mau",
        "dau",
        "new_users",
        "uninstalls",
        "sessions",
    ],
    "hourly (sessions_hourly)": ["sessions_hourly"],
}


@dataclass(frozen=True)
class Footprint:
    series: int
    exit_code: int
    seconds: float
    peak_rss_bytes: int
    requests: int
    failed_requests: int
    output_bytes: int
    samples: str  # from the CLI's `backfill written` log line


def workspace(apps: int) -> SimWorkspace:
    return SimWorkspace(
        "bench",
        API_KEY,
        apps=tuple(SimApp(f"app-{n:02d}", f"app{n:02d}", 10_000 * (n + 1)) for n in range(apps)),
        time_zone="America/New_York",
    )


def config(url: str, simulated: SimWorkspace, kpis: list[str]) -> dict[str, object]:
    return {
        "poll": {"timeout": "10s", "kpis": kpis},
        "workspaces": [
            {
                "name": simulated.name,
                "url": url,
                "api_key_env": KEY_ENV,
                "time_zone": simulated.time_zone,
                "apps": [{"name": app.name, "id": app.app_id} for app in simulated.apps],
            }
        ],
    }


def run_backfill(
    sim: BrazeSimulator, simulated: SimWorkspace, kpis: list[str], args: argparse.Namespace
) -> Footprint:
    with tempfile.TemporaryDirectory(prefix="backfill-footprint-") as folder:
        tmp = Path(folder)
        config_file = tmp / "config.yaml"
        config_file.write_text(yaml.safe_dump(config(sim.url, simulated, kpis)))
        output, log = tmp / "braze.om", tmp / "stderr.log"
        command = [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config_file}",
            f"--backfill={args.days}d",
            f"--backfill.step={args.step}",
            f"--backfill.output={output}",
        ]
        sim.clear_requests()
        started = time.monotonic()
        with log.open("w") as stderr:
            child = subprocess.Popen(  # noqa: S603 (our own CLI, arguments built here)
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, KEY_ENV: API_KEY},
            )
            _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen from waiting
        logged = log.read_text()
        if child.returncode != 0:
            print(logged, file=sys.stderr)
        written = re.search(r'msg="backfill written".* samples=(\d+)', logged)
        requests = sim.requests
        return Footprint(
            series=len(kpis) * (1 + len(simulated.apps)),
            exit_code=child.returncode,
            seconds=seconds,
            peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
            requests=len(requests),
            failed_requests=sum(1 for r in requests if r.status != 200),
            output_bytes=output.stat().st_size if output.exists() else 0,
            samples=written.group(1) if written else "?",
        )


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90, help="backfill duration in days")
    parser.add_argument("--apps", type=int, default=19, help="apps besides the whole workspace")
    parser.add_argument("--step", default="1m", help="--backfill.step")
    args = parser.parse_args()
    simulated = workspace(args.apps)
    print(
        f"--backfill {args.days}d --backfill.step {args.step}, one workspace of {args.apps} "
        f"apps + the whole workspace ({1 + args.apps} series per kind), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    failed = False
    with BrazeSimulator((simulated,)) as sim:
        for title, kpis in RUNS.items():
            footprint = run_backfill(sim, simulated, kpis, args)
            failed |= footprint.exit_code != 0
            print(
                f"\n{title}: {footprint.series} series\n"
                f"  exit code        {footprint.exit_code}\n"
                f"  wall time        {footprint.seconds:,.1f} s\n"
                f"  peak RSS         {mib(footprint.peak_rss_bytes)}\n"
                f"  Braze requests   {footprint.requests:,} "
                f"({footprint.failed_requests} not 200)\n"
                f"  output           {mib(footprint.output_bytes)}, "
                f"{footprint.samples} samples",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
