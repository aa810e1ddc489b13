"""Braze stand-in for bench/serving.py: one simulated workspace of 199 apps, every answer late.

Run as a child process (`python bench/standin.py --latency 0.2 [--tls-ca FILE]`); with
`--tls-ca` it serves HTTPS, as Braze does. It prints its URL on stdout, then answers each line
"count" on stdin with the number of requests it has received so far. It stops at the end of
stdin.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path

import certifi
import trustme

from exporter.simulator import BrazeSimulator, SimApp, SimWorkspace
from exporter.simulator.faults import Fault

API_KEY = "bench-key-0123456789abcdef"
WORKSPACE_NAME = "bench"
APP_COUNT = 199


def bench_apps() -> tuple[SimApp, ...]:
    return tuple(
        SimApp(
            app_id=f"00000000-0000-4000-8000-{number:012d}",
            name=f"app-{number:03d}",
            base_mau=10_000 * (number + 1),
        )
        for number in range(APP_COUNT)
    )


def bench_workspace() -> SimWorkspace:
    return SimWorkspace(WORKSPACE_NAME, API_KEY, apps=bench_apps(), time_zone="UTC")


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A server context for 127.0.0.1 from a new test CA. `ca_file`, for the exporter to trust
    (REQUESTS_CA_BUNDLE), gets the public roots it trusts by default (certifi's bundle, as
    for Braze) with the test CA added, so that loading it costs what it costs in use."""
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    roots = Path(certifi.where()).read_bytes()
    Path(ca_file).write_bytes(roots + b"\n" + authority.cert_pem.bytes())
    return context


def answer_counts(sim: BrazeSimulator) -> None:
    for line in sys.stdin:
        if line.strip() == "count":
            print(len(sim.requests), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument("--tls-ca", help="serve HTTPS, writing the CA to trust to this file")
    args = parser.parse_args()
    tls = None if args.tls_ca is None else tls_context(args.tls_ca)
    with BrazeSimulator((bench_workspace(),), tls=tls) as sim:
        sim.inject(Fault(delay=args.latency))
        print(sim.url, flush=True)
        answer_counts(sim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
