"""The baseline of bench/serving.py: a bare prometheus_client server serving fixed families.

Run as a child process (`python bench/baseline.py EXPOSITION_FILE`): it parses the
Prometheus text in EXPOSITION_FILE once, serves those families with
`prometheus_client.start_http_server` on a free loopback port (rendering them again on every
scrape, as the library does), prints the port on stdout, and stops at the end of stdin.
What anyone would write in an afternoon to serve metrics they already hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class FixedFamilies(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def registry_serving(exposition: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(FixedFamilies(list(text_string_to_metric_families(exposition))))
    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exposition", type=Path, help="Prometheus text to serve")
    args = parser.parse_args()
    registry = registry_serving(args.exposition.read_text())
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
