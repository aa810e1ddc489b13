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
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack, nullcontext
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from exporter import __version__
from exporter.logs import FORMATS, LEVELS, configure_logging

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler
    from pydantic import SecretStr

    from exporter.backfill import Options as BackfillOptions
    from exporter.braze import BrazeClient
    from exporter.config import Config
    from exporter.exposition_cache import ExpositionCache
    from exporter.reload import Loaded, Reloader, ReloadOutcome
    from exporter.routes import ExporterApp
    from exporter.server import ExporterServer
    from exporter.webconfig import WebConfig
    from exporter.wiring import Exporter

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)  # logged, then ignored
# SIGHUP reloads the config while serving; before that, and in the one-shot modes, it is
# logged and ignored (its default action would end the process).
DEFAULT_LISTEN = ":9877"
DEMO_LISTEN = "localhost:9877"  # the demo binds loopback only unless told otherwise
DEFAULT_WORKERS = 40  # HTTP worker threads with --web.max-requests=0 (no limit)
SHUTDOWN_GRACE_SECONDS = 2.0  # then exit even with a Braze request in flight
SIGNAL_CHECK_SECONDS = 0.5

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
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="PATH",
        help="web config file (exporter-toolkit format) enabling TLS and/or basic auth; "
        "re-read on reload",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default: %(default)s)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the exporter's own process_* and python_* metrics",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        default=40,
        metavar="N",
        help="scrapes served at once, more get a 503; 0 for no limit (default: %(default)s)",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backfill is not None and args.backfill_output is None:
        parser.error("--backfill needs --backfill.output (a file, or - for stdout)")
    configure_logging(args.log_level, args.log_format)
    _on_signals((signal.SIGINT, signal.SIGTERM), _exit_at_once)  # until serving, if it does
    _on_signals((*IGNORED_SIGNALS, signal.SIGHUP), _ignore_signal)  # SIGHUP reloads once serving

    from exporter.config import ConfigError
    from exporter.series import series_of
    from exporter.server import parse_listen_address

    with ExitStack() as cleanup:
        try:
            simulator_url = None
            if args.demo:
                from exporter import demo  # the simulator only for --demo

                simulator_url = cleanup.enter_context(demo.demo_simulator()).url
            load = functools.partial(_load, args.config_file, args.web_config_file, simulator_url)
            loaded = load()
            config = loaded.config
            if args.check_config:
                source = "demo config" if args.demo else args.config_file
                print(
                    f"{source}: ok ({_count(len(config.workspaces), 'workspace')}, "
                    f"{_count(len(series_of(config)), 'series')})"
                )
                if args.web_config_file is not None:
                    print(f"{args.web_config_file}: ok ({_web_summary(loaded.web)})")
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
                _check_web_flags(args.telemetry_path, args.max_requests)
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
        secrets = [key.get_secret_value() for key in loaded.api_keys.values()]
        configure_logging(args.log_level, args.log_format, secrets)
        if args.backfill is not None:
            return _run_backfill(config, loaded.api_keys, backfill, output)
        from exporter.wiring import build_exporter

        exporter = build_exporter(
            config,
            loaded.api_keys,
            exporter_metrics=not (args.disable_exporter_metrics or args.once),
        )
        if args.once:
            return _run_once(exporter)
        return _serve(exporter, loaded, load=load, args=args, host=host, port=port)
    raise AssertionError("unreachable")


def _load(config_file: str, web_config_file: str | None, simulator_url: str | None) -> Loaded:
    """Read and validate the config, the API keys and the web config (the demo's config when
    given a simulator's URL); a ConfigError lists every problem of every file."""
    from exporter.config import ConfigError, load_config, read_api_key
    from exporter.reload import Loaded
    from exporter.webconfig import NO_WEB_CONFIG, load_web_config

    errors: list[ConfigError] = []
    config = None
    try:
        if simulator_url is not None:
            from exporter import demo

            config, environ = demo.demo_config(simulator_url)
        else:
            environ = dict(os.environ)
            config = load_config(config_file, environ)
        api_keys = {w.name: read_api_key(w, environ) for w in config.workspaces}
    except ConfigError as exc:
        errors.append(exc)
    web = NO_WEB_CONFIG
    if web_config_file is not None:
        try:
            web = load_web_config(web_config_file)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        problems = [f"{e.source}: {p}" for e in errors for p in e.problems]
        raise ConfigError("configuration", problems)
    assert config is not None
    return Loaded(config, api_keys, web)


def _web_summary(web: WebConfig) -> str:
    parts = ["TLS" if web.tls_context is not None else "no TLS"]
    parts.append(_count(len(web.users), "basic auth user") if web.users else "no basic auth")
    return ", ".join(parts)


RESERVED_PATHS = ("/", "/healthz", "/readyz", "/-/reload")


def _check_web_flags(telemetry_path: str, max_requests: int) -> None:
    if not telemetry_path.startswith("/") or telemetry_path in RESERVED_PATHS:
        raise ValueError(
            f"--web.telemetry-path: {telemetry_path!r} must be a path starting with / "
            f"other than {', '.join(RESERVED_PATHS)}"
        )
    if max_requests < 0:
        raise ValueError(f"--web.max-requests: {max_requests} must be 0 (no limit) or more")


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


def _next_signal(events: queue.SimpleQueue[int]) -> int:
    """The next signal the handler queued. The kernel hands a signal to any thread of the
    process; Python then runs the handler once the main thread is back in the interpreter,
    which a wait without a timeout would never be: SIGTERM would go unanswered."""
    while True:
        try:
            return events.get(timeout=SIGNAL_CHECK_SECONDS)
        except queue.Empty:
            continue


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
    from exporter.wiring import build_client

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


def _serve(
    exporter: Exporter,
    loaded: Loaded,
    *,
    load: Callable[[], Loaded],
    args: argparse.Namespace,
    host: str,
    port: int,
) -> int:
    from exporter.exposition import Exposition
    from exporter.exposition_cache import ExpositionCache
    from exporter.poller import ClockWatchdog, schedule
    from exporter.reload import Reloader
    from exporter.routes import Endpoints, ExporterApp
    from exporter.server import SPARE_WORKERS, ExporterServer, format_listen_address
    from exporter.tls_watch import CertificateWatch

    scheduler = schedule(exporter.poller, exporter.config.poll.interval)
    watchdog = ClockWatchdog(scheduler)
    reloader: Reloader | None = None
    cache = ExpositionCache(
        exporter.stored, exporter.store.changed, lambda: exporter.store.cycles_completed
    )

    def reload_over_http() -> ReloadOutcome:
        assert reloader is not None  # set before the server starts
        return reloader.reload("http")

    app = ExporterApp(
        Endpoints(
            exposition=Exposition(cache, exporter.live, max_requests=args.max_requests),
            is_healthy=lambda: scheduler.running and exporter.poller.is_live(),
            is_ready=lambda: exporter.store.cycles_completed > 0,
            status_page=lambda: _status_page(exporter, scheduler, reloader, args),
            reload=reload_over_http,
            metrics_path=args.telemetry_path,
        ),
        loaded.web,
    )
    try:
        server = ExporterServer(
            app,
            host,
            port,
            workers=(args.max_requests or DEFAULT_WORKERS) + SPARE_WORKERS,
            tls_context=loaded.web.tls_context,
        )
    except OSError as exc:
        log.error(
            "cannot listen",
            extra={"address": format_listen_address(host, port), "error": exc.strerror},
        )
        return EXIT_FAILURE
    reloader = Reloader(
        load,
        functools.partial(
            _apply,
            exporter=exporter,
            scheduler=scheduler,
            app=app,
            server=server,
            cache=cache,
            web_config_file=args.web_config_file,
        ),
        exporter.live,
    )
    events: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is safe in a signal handler
    _on_signals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), lambda sig, _: events.put(sig))
    certificates = CertificateWatch(lambda: app.web_config, server.set_tls_context)
    cache.start()
    scheduler.start()  # before serving, so that /healthz is 200 from the first request on
    watchdog.start()
    server.start()
    if server.tls:
        certificates.start()
    log.info(
        "listening",
        extra={
            "address": format_listen_address(host, server.port),
            "tls": server.tls,
            "version": __version__,
        },
    )
    while (signum := _next_signal(events)) == signal.SIGHUP:
        reloader.reload("SIGHUP")
    log.info("stopping", extra={"signal": signal.Signals(signum).name})

    certificates.stop()
    watchdog.stop()
    scheduler.shutdown(wait=False)
    server.stop()
    cache.stop()
    exporter.poller.close()
    if not exporter.poller.wait_idle(SHUTDOWN_GRACE_SECONDS):
        log.warning("exiting with a Braze request still in flight")
        logging.shutdown()
        os._exit(EXIT_OK)  # whatever else still runs, the exporter is done
    log.info("stopped")
    return EXIT_OK


def _apply(
    loaded: Loaded,
    *,
    exporter: Exporter,
    scheduler: BaseScheduler,
    app: ExporterApp,
    server: ExporterServer,
    cache: ExpositionCache,
    web_config_file: str | None,
) -> None:
    """Put a reloaded configuration to use, or refuse it before changing anything."""
    from exporter.config import ConfigError
    from exporter.logs import mask_also
    from exporter.poller import reschedule

    if (loaded.web.tls_context is not None) != server.tls:
        raise ConfigError(
            str(web_config_file),
            ["tls_server_config: turning TLS on or off takes a restart; nothing was changed"],
        )
    mask_also(key.get_secret_value() for key in loaded.api_keys.values())
    interval = exporter.config.poll.interval
    new_series = exporter.apply(loaded.config, loaded.api_keys)
    cache.refresh()  # removed series leave /metrics with the reload's answer
    if loaded.config.poll.interval != interval:
        reschedule(scheduler, loaded.config.poll.interval)
    app.set_web_config(loaded.web)
    if loaded.web.tls_context is not None:
        server.set_tls_context(loaded.web.tls_context)
    if new_series:
        threading.Thread(
            target=exporter.poller.poll_new_series,
            args=(new_series,),
            name="poll new series",
            daemon=True,
        ).start()


def _status_page(
    exporter: Exporter,
    scheduler: BaseScheduler,
    reloader: Reloader | None,
    args: argparse.Namespace,
) -> str:
    from exporter.poller import next_poll
    from exporter.status_page import StatusInputs, render_status_page

    return render_status_page(
        StatusInputs(
            snapshot=exporter.store.snapshot(),
            config=exporter.config,
            config_file="(demo config)" if args.demo else args.config_file,
            version=__version__,
            now=time.time(),
            next_poll=next_poll(scheduler),
            metrics_path=args.telemetry_path,
            last_reload_successful=reloader is None or reloader.last_successful,
            last_reload_time=None if reloader is None else reloader.last_success_time,
        )
    )
