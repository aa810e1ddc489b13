"""Command line: flags, logging, signals, and wiring config -> clients -> poller -> state ->
collector -> HTTP server."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from exporter import __version__
from exporter.braze import BrazeClient
from exporter.collector import BrazeCollector
from exporter.config import Config, ConfigError, load_config, read_api_key
from exporter.logs import FORMATS, LEVELS, configure_logging
from exporter.poller import Outcome, Poller, schedule
from exporter.series import series_of
from exporter.server import (
    ExporterServer,
    format_listen_address,
    make_app,
    parse_listen_address,
)
from exporter.state import StateStore
from exporter.telemetry import RequestTelemetry

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_LISTEN = ":9877"
DEMO_LISTEN = "localhost:9877"  # the demo binds loopback only unless told otherwise
SHUTDOWN_GRACE_SECONDS = 2.0  # then exit even with a Braze request in flight

log = logging.getLogger("exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braze-exporter",
        description="Prometheus exporter for Braze KPIs: polls Braze on a schedule and serves "
        "the newest values at /metrics.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="YAML config file (default: %(default)s)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=None,
        metavar="HOST:PORT",
        help=f"address to serve on (default: {DEFAULT_LISTEN}; {DEMO_LISTEN} with --demo)",
    )
    parser.add_argument("--log.level", dest="log_level", choices=LEVELS, default="info")
    parser.add_argument("--log.format", dest="log_format", choices=FORMATS, default="logfmt")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config and exit: 0 if valid, 2 listing every problem",
    )
    mode.add_argument(
        "--once",
        action="store_true",
        help="poll every series once, print the metrics, exit 0 if all succeeded",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve against a built-in Braze simulator with a demo config "
        "(no key or config file needed)",
    )
    parser.add_argument("--version", action="version", version=f"braze-exporter {__version__}")
    return parser


@dataclass
class Exporter:
    """Everything one config runs on, wired together."""

    registry: CollectorRegistry
    store: StateStore
    poller: Poller


def build_exporter(
    config: Config, api_keys: Mapping[str, SecretStr], clock: Callable[[], float] = time.time
) -> Exporter:
    """Wire config -> clients -> poller -> state -> collector; `clock` is the wall clock they
    all read (tests pass a fake one)."""
    registry = CollectorRegistry(auto_describe=True)
    series = series_of(config)
    store = StateStore(series)
    telemetry = RequestTelemetry(registry)
    clients = {}
    for workspace in config.workspaces:
        name = workspace.name
        clients[name] = BrazeClient(
            workspace.base_url,
            api_keys[name],
            timeout=config.poll.timeout,
            pool_size=config.poll.concurrency,
            on_attempt=functools.partial(telemetry.observe, name),
            on_rate_limit=functools.partial(store.record_rate_limit, name),
            on_pause=functools.partial(store.record_pause, name),
            time_zone=workspace.zone,
            clock=clock,
        )
    registry.register(BrazeCollector(store, __version__, clock))
    poller = Poller(
        store,
        clients,
        series,
        length=config.poll.length,
        concurrency=config.poll.concurrency,
        clock=clock,
    )
    return Exporter(registry, store, poller)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    with ExitStack() as cleanup:
        try:
            if args.demo:
                from exporter import demo  # noqa: PLC0415 (the simulator only for --demo)

                simulator = cleanup.enter_context(demo.demo_simulator())
                config, environ = demo.demo_config(simulator.url)
            else:
                environ = dict(os.environ)
                config = load_config(args.config_file, environ)
            if args.check_config:
                source = "demo config" if args.demo else args.config_file
                print(
                    f"{source}: ok ({_count(len(config.workspaces), 'workspace')}, "
                    f"{_count(len(series_of(config)), 'series')})"
                )
                print(_planned_requests(config))
                return EXIT_OK
            host, port = parse_listen_address(
                args.listen_address or (DEMO_LISTEN if args.demo else DEFAULT_LISTEN)
            )
            api_keys = {w.name: read_api_key(w, environ) for w in config.workspaces}
        except (ConfigError, ValueError) as exc:  # ValueError: the listen address
            print(f"braze-exporter: {exc}", file=sys.stderr)
            return EXIT_USAGE
        secrets = [key.get_secret_value() for key in api_keys.values()]
        configure_logging(args.log_level, args.log_format, secrets)
        exporter = build_exporter(config, api_keys)
        if args.once:
            return _run_once(exporter)
        return _serve(exporter, config, host, port)
    raise AssertionError("unreachable")


def _count(number: float, noun: str) -> str:
    plural = "" if number == 1 or noun.endswith("s") else "s"
    return f"{_number(number)} {noun}{plural}"


def _number(number: float) -> str:
    """A number as people write it: no exponent, no trailing zeros (1080000, 51.4, 4)."""
    return f"{number:f}".rstrip("0").rstrip(".")


def _planned_requests(config: Config) -> str:
    """Braze requests per hour by workspace: one per series per cycle, retries not counted."""
    cycles = 3600 / config.poll.interval
    per_workspace = Counter(series.workspace for series in series_of(config))
    lines = [
        "planned Braze requests per hour, one per series and cycle "
        f"(every {_duration(config.poll.interval)}), retries not counted:"
    ]
    for workspace in config.workspaces:
        count = per_workspace[workspace.name]
        lines.append(
            f"  {workspace.name}: {_number(round(count * cycles, 1))} "
            f"({_count(count, 'series')}, {_count(round(cycles, 2), 'cycle')} per hour)"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _run_once(exporter: Exporter) -> int:
    outcomes = exporter.poller.run_cycle()
    exporter.poller.close()
    sys.stdout.write(generate_latest(exporter.registry).decode())
    all_ok = outcomes is not None and set(outcomes.elements()) <= {Outcome.SUCCEEDED}
    return EXIT_OK if all_ok else EXIT_FAILURE


def _serve(exporter: Exporter, config: Config, host: str, port: int) -> int:
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    scheduler = schedule(exporter.poller, config.poll.interval)
    app = make_app(
        exporter.registry,
        is_healthy=lambda: scheduler.running,
        is_ready=lambda: exporter.store.cycles_completed > 0,
    )
    try:
        server = ExporterServer(app, host, port)
    except OSError as exc:
        log.error(
            "cannot listen",
            extra={"address": format_listen_address(host, port), "error": exc.strerror},
        )
        return EXIT_FAILURE
    scheduler.start()  # before serving, so that /healthz is 200 from the first request on
    server.start()
    log.info(
        "listening",
        extra={"address": format_listen_address(host, server.port), "version": __version__},
    )
    stop.wait()

    scheduler.shutdown(wait=False)
    server.stop()
    exporter.poller.close()
    if not exporter.poller.wait_idle(SHUTDOWN_GRACE_SECONDS):
        log.warning("exiting with a Braze request still in flight")
        logging.shutdown()
        os._exit(EXIT_OK)  # worker threads blocked in a request would delay a normal exit
    log.info("stopped")
    return EXIT_OK
