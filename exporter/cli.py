"""Command line: flags, logging, signals, and wiring config -> clients -> poller -> state ->
collector -> HTTP server.

This module imports only the standard library and the logging set-up; `main` imports the rest
(requests, pydantic, prometheus_client, APScheduler: a few hundred milliseconds) once its
signal handlers are in place, so that Ctrl-C during start-up exits 130 with a log line rather
than a KeyboardInterrupt traceback.
"""

# ruff: noqa: PLC0415 (imports inside functions: see the module docstring)

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
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from exporter import __version__
from exporter.logs import FORMATS, LEVELS, configure_logging

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from pydantic import SecretStr

    from exporter.backfill import Options as BackfillOptions
    from exporter.braze import BrazeClient, RetryPolicy
    from exporter.config import Config
    from exporter.poller import Poller
    from exporter.state import StateStore

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)  # logged, then ignored
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
    mode.add_argument(
        "--backfill",
        metavar="DURATION",
        help="write the past DURATION (e.g. 90d, at most 730d) of every series as OpenMetrics "
        "text with timestamps for promtool tsdb create-blocks-from openmetrics, then exit",
    )
    parser.add_argument(
        "--backfill.output",
        dest="backfill_output",
        metavar="PATH",
        help="file the backfill writes (- for stdout); required with --backfill",
    )
    parser.add_argument(
        "--backfill.step",
        dest="backfill_step",
        default="1m",
        metavar="DURATION",
        help="time between backfilled samples, at most 5m (default: %(default)s)",
    )
    parser.add_argument(
        "--backfill.job",
        dest="backfill_job",
        default="braze-exporter",
        help="job label of the backfilled series (default: %(default)s)",
    )
    parser.add_argument(
        "--backfill.instance",
        dest="backfill_instance",
        default="backfill",
        help="instance label of the backfilled series (default: %(default)s)",
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
    from prometheus_client import CollectorRegistry

    from exporter.braze import RetryPolicy
    from exporter.collector import BrazeCollector
    from exporter.poller import Poller, limits_for
    from exporter.series import series_of
    from exporter.state import StateStore
    from exporter.telemetry import RequestTelemetry

    retry = RetryPolicy()
    registry = CollectorRegistry(auto_describe=True)
    series = series_of(config)
    store = StateStore(series)
    telemetry = RequestTelemetry(registry)
    clients = {
        workspace.name: build_client(
            config,
            workspace.name,
            api_keys[workspace.name],
            retry=retry,
            clock=clock,
            on_attempt=functools.partial(telemetry.observe, workspace.name),
            on_rate_limit=functools.partial(store.record_rate_limit, workspace.name),
            on_pause=functools.partial(store.record_pause, workspace.name),
        )
        for workspace in config.workspaces
    }
    registry.register(BrazeCollector(store, __version__, clock))
    poller = Poller(
        store,
        clients,
        series,
        length=config.poll.length,
        concurrency=config.poll.concurrency,
        limits=limits_for(config.poll.interval, config.poll.timeout, retry),
        clock=clock,
    )
    return Exporter(registry, store, poller)


def build_client(
    config: Config,
    workspace_name: str,
    api_key: SecretStr,
    *,
    retry: RetryPolicy,
    clock: Callable[[], float] = time.time,
    **observers: Callable[..., None],
) -> BrazeClient:
    """The Braze client of one workspace of the config, with the given observers."""
    from exporter.braze import BrazeClient

    workspace = next(w for w in config.workspaces if w.name == workspace_name)
    return BrazeClient(
        workspace.base_url,
        api_key,
        timeout=config.poll.timeout,
        pool_size=config.poll.concurrency,
        retry=retry,
        time_zone=workspace.zone,
        clock=clock,
        **observers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backfill is not None and args.backfill_output is None:
        parser.error("--backfill needs --backfill.output (a file, or - for stdout)")
    configure_logging(args.log_level, args.log_format)
    _on_signals((signal.SIGINT, signal.SIGTERM), _exit_at_once)  # until serving, if it does
    _on_signals(IGNORED_SIGNALS, _ignore_signal)  # SIGHUP keeps its default: it ends the process

    from exporter.config import ConfigError, load_config, read_api_key
    from exporter.series import series_of
    from exporter.server import parse_listen_address

    with ExitStack() as cleanup:
        try:
            if args.demo:
                from exporter import demo  # the simulator only for --demo

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
            if args.backfill is not None:
                from exporter.backfill import parse_options

                backfill = parse_options(
                    args.backfill, args.backfill_step, args.backfill_job, args.backfill_instance
                )
                output = cleanup.enter_context(_open_output(args.backfill_output))
            else:
                host, port = parse_listen_address(
                    args.listen_address or (DEMO_LISTEN if args.demo else DEFAULT_LISTEN)
                )
            api_keys = {w.name: read_api_key(w, environ) for w in config.workspaces}
        except (ConfigError, ValueError) as exc:  # ValueError: the listen address or a flag
            print(f"braze-exporter: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(
                f"braze-exporter: --backfill.output: cannot write {args.backfill_output}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        secrets = [key.get_secret_value() for key in api_keys.values()]
        configure_logging(args.log_level, args.log_format, secrets)
        if args.backfill is not None:
            return _run_backfill(config, api_keys, backfill, output)
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
    from exporter.series import series_of

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


def _on_signals(signals: Sequence[int], handler: Callable[[int, FrameType | None], None]) -> None:
    for sig in signals:
        signal.signal(sig, handler)


def _exit_at_once(signum: int, _frame: FrameType | None) -> None:
    """SIGINT or SIGTERM during start-up or --once: nothing under way is worth waiting for, and
    a KeyboardInterrupt would only print a traceback. The status is 128 + the signal number, as
    shells report it: 130 for SIGINT, 143 for SIGTERM."""
    code = 128 + signum
    log.info("exiting at once", extra={"signal": signal.Signals(signum).name, "exit_code": code})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


def _ignore_signal(signum: int, _frame: FrameType | None) -> None:
    """Signals whose default action would end the process without a word."""
    log.warning("signal ignored", extra={"signal": signal.Signals(signum).name})


def _open_output(path: str) -> ContextManager[TextIO]:
    """The backfill's output, opened (so checked) before any request: stdout for "-"."""
    if path == "-":
        return nullcontext(sys.stdout)
    return open(path, "w", encoding="utf-8")


def _run_backfill(
    config: Config, api_keys: Mapping[str, SecretStr], options: BackfillOptions, out: TextIO
) -> int:
    from exporter.backfill import run_backfill
    from exporter.braze import RetryPolicy

    retry = RetryPolicy()

    def make_client(workspace: str, on_attempt: Callable[[str, str, float], None]) -> BrazeClient:
        return build_client(
            config, workspace, api_keys[workspace], retry=retry, on_attempt=on_attempt
        )

    complete = run_backfill(config, make_client, options, out, sys.stderr)
    return EXIT_OK if complete else EXIT_FAILURE


def _run_once(exporter: Exporter) -> int:
    from prometheus_client import generate_latest

    from exporter.poller import Outcome

    outcomes = exporter.poller.run_cycle()
    exporter.poller.close()
    sys.stdout.write(generate_latest(exporter.registry).decode())
    all_ok = outcomes is not None and set(outcomes.elements()) <= {Outcome.SUCCEEDED}
    return EXIT_OK if all_ok else EXIT_FAILURE


def _serve(exporter: Exporter, config: Config, host: str, port: int) -> int:
    from exporter.poller import ClockWatchdog, schedule
    from exporter.server import ExporterServer, format_listen_address, make_app

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    scheduler = schedule(exporter.poller, config.poll.interval)
    watchdog = ClockWatchdog(scheduler)
    app = make_app(
        exporter.registry,
        is_healthy=lambda: scheduler.running and exporter.poller.is_live(),
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
    _on_signals((signal.SIGINT, signal.SIGTERM), request_stop)
    scheduler.start()  # before serving, so that /healthz is 200 from the first request on
    watchdog.start()
    server.start()
    log.info(
        "listening",
        extra={"address": format_listen_address(host, server.port), "version": __version__},
    )
    stop.wait()

    watchdog.stop()
    scheduler.shutdown(wait=False)
    server.stop()
    exporter.poller.close()
    if not exporter.poller.wait_idle(SHUTDOWN_GRACE_SECONDS):
        log.warning("exiting with a Braze request still in flight")
        logging.shutdown()
        os._exit(EXIT_OK)  # whatever else still runs, the exporter is done
    log.info("stopped")
    return EXIT_OK
