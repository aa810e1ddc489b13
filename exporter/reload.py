"""Reloading the configuration while serving (SIGHUP, POST /-/reload): read and validate all
of it first, then apply it in one step, or keep the last good one and say why."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from pydantic import SecretStr

from exporter.config import Config, ConfigError
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """Everything read from files and the environment that a reload may change."""

    config: Config
    api_keys: Mapping[str, SecretStr]
    web: WebConfig


@dataclass(frozen=True)
class ReloadOutcome:
    succeeded: bool
    problems: tuple[str, ...] = ()  # one line each, never a secret


class Reloader:
    """Runs one reload at a time: `load` reads and validates everything (ConfigError listing
    every problem), `apply` puts it to use and may refuse it, with a ConfigError, before
    changing anything. Exports whether the last reload succeeded, as Prometheus does."""

    def __init__(
        self,
        load: Callable[[], Loaded],
        apply: Callable[[Loaded], None],
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._apply = apply
        self._clock = clock
        self._lock = threading.Lock()
        self._successful = Gauge(
            "braze_exporter_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried since the start).",
            registry=registry,
        )
        self._success_time = Gauge(
            "braze_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load, at start or by a reload.",
            registry=registry,
        )
        self.last_successful = True
        self.last_success_time = clock()
        self._successful.set(1)
        self._success_time.set(self.last_success_time)

    def reload(self, trigger: str) -> ReloadOutcome:
        """Load and apply the configuration; on failure, log every problem and keep running
        on the last good one."""
        with self._lock:
            try:
                self._apply(self._load())
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error(
                        "reload failed",
                        extra={"trigger": trigger, "source": exc.source, "problem": problem},
                    )
                self.last_successful = False
                self._successful.set(0)
                return ReloadOutcome(False, tuple(f"{exc.source}: {p}" for p in exc.problems))
            self.last_successful = True
            self.last_success_time = self._clock()
            self._successful.set(1)
            self._success_time.set(self.last_success_time)
            log.info("config reloaded", extra={"trigger": trigger})
            return ReloadOutcome(True)
