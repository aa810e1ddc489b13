"""`python -m exporter.simulator`: serve the demo workspaces until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from exporter.server import parse_listen_address
from exporter.simulator.demo import DEMO_WORKSPACES
from exporter.simulator.server import BrazeSimulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a Braze data series API stand-in.")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen_address(args.listen)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # wherever the signal lands, stop cleanly
        signal.signal(signum, lambda *_: stop.set())
    with BrazeSimulator(DEMO_WORKSPACES, host=host or "127.0.0.1", port=port) as simulator:
        print(f"Braze simulator listening on {simulator.url}", flush=True)
        for workspace in DEMO_WORKSPACES:
            print(
                f"  workspace {workspace.name}: api key {workspace.api_key}, "
                f"time zone {workspace.time_zone}",
                flush=True,
            )
        stop.wait()
    return 0
