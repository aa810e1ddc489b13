"""The exporter of one config, wired: config -> clients -> poller -> state -> collector, and
the same wiring brought in line with a reloaded config in one step."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pydantic import SecretStr

from exporter import __version__
from exporter.braze import BrazeClient, RetryPolicy
from exporter.collector import BrazeCollector, RateLimitPauseCollector
from exporter.config import Config, WorkspaceConfig
from exporter.poller import Plan, Poller, limits_for
from exporter.series import Series, series_of
from exporter.state import StateStore
from exporter.telemetry import RequestTelemetry

log = logging.getLogger(__name__)


@dataclass
class Exporter:
    """Everything one config runs on. `apply` moves it to another config.

    Its metrics come in two registries: `stored`, what changes only when the store is written
    (rendered once per change), and `live`, what is read on every scrape; `registry` is both."""

    config: Config
    stored: CollectorRegistry
    live: CollectorRegistry
    registry: CollectorRegistry
    store: StateStore
    poller: Poller
    telemetry: RequestTelemetry
    clock: Callable[[], float] = time.time
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def apply(self, config: Config, api_keys: Mapping[str, SecretStr]) -> tuple[Series, ...]:
        """Run on `config` from now on; return the series to poll at once.

        A workspace that still polls the same Braze URL in the same time zone keeps its
        client, so its connections and rate-limit pause, and its series keep their values;
        a rotated key goes into that client for its next request. A workspace whose URL or
        zone changed starts over with a new client. New series start empty, dropped ones
        leave the state (and /metrics) in the same step."""
        old_clients = self.poller.plan.clients
        old_workspaces = {w.name: w for w in self.config.workspaces}
        clients: dict[str, BrazeClient] = {}
        start_over: set[str] = set()
        for workspace in config.workspaces:
            held = old_clients.get(workspace.name)
            before = old_workspaces.get(workspace.name)
            if held is None or before is None or _place(before) != _place(workspace):
                clients[workspace.name] = self._client(config, workspace, api_keys)
                start_over.add(workspace.name)
            elif _connections(self.config) != _connections(config):
                clients[workspace.name] = self._client(config, workspace, api_keys)
                clients[workspace.name].hold_until(held.paused_until)
            else:
                held.set_api_key(api_keys[workspace.name])
                clients[workspace.name] = held
        series = series_of(config)
        known = {s for s in self.poller.plan.series if s.workspace not in start_over}
        self.store.set_series(series, start_over)
        self.poller.set_plan(_plan(config, clients, series, self.retry))
        for name, client in old_clients.items():
            if clients.get(name) is not client:
                client.close()
        self.config = config
        return tuple(s for s in series if s not in known)

    def _client(
        self, config: Config, workspace: WorkspaceConfig, api_keys: Mapping[str, SecretStr]
    ) -> BrazeClient:
        return _observed_client(
            config,
            workspace,
            api_keys,
            store=self.store,
            telemetry=self.telemetry,
            retry=self.retry,
            clock=self.clock,
        )


def build_exporter(
    config: Config,
    api_keys: Mapping[str, SecretStr],
    clock: Callable[[], float] = time.time,
    *,
    exporter_metrics: bool = False,
) -> Exporter:
    """Wire config -> clients -> poller -> state -> collector; `clock` is the wall clock they
    all read (tests pass a fake one). `exporter_metrics` adds process_* and python_*."""
    changed = threading.Event()
    series = series_of(config)
    store = StateStore(series, changed)
    stored, live = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    telemetry = RequestTelemetry(stored, changed)
    stored.register(BrazeCollector(store, __version__))
    live.register(RateLimitPauseCollector(store, clock))
    if exporter_metrics:
        ProcessCollector(registry=live)
        PlatformCollector(registry=live)
        GCCollector(registry=live)
    registry = CollectorRegistry()
    registry.register(stored)
    registry.register(live)
    retry = RetryPolicy()
    clients = {
        w.name: _observed_client(
            config, w, api_keys, store=store, telemetry=telemetry, retry=retry, clock=clock
        )
        for w in config.workspaces
    }
    poller = Poller(
        store,
        clients,
        series,
        length=config.poll.length,
        concurrency=config.poll.concurrency,
        limits=limits_for(config.poll.interval, config.poll.timeout, retry),
        clock=clock,
    )
    return Exporter(config, stored, live, registry, store, poller, telemetry, clock, retry)


def _observed_client(
    config: Config,
    workspace: WorkspaceConfig,
    api_keys: Mapping[str, SecretStr],
    *,
    store: StateStore,
    telemetry: RequestTelemetry,
    retry: RetryPolicy,
    clock: Callable[[], float],
) -> BrazeClient:
    """A workspace's client, reporting its requests, rate limits and pauses."""
    return build_client(
        config,
        workspace.name,
        api_keys[workspace.name],
        retry=retry,
        clock=clock,
        on_attempt=functools.partial(telemetry.observe, workspace.name),
        on_rate_limit=functools.partial(store.record_rate_limit, workspace.name),
        on_pause=functools.partial(store.record_pause, workspace.name),
    )


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


def _plan(
    config: Config,
    clients: Mapping[str, BrazeClient],
    series: tuple[Series, ...],
    retry: RetryPolicy,
) -> Plan:
    return Plan(
        clients,
        series,
        config.poll.length,
        config.poll.concurrency,
        limits_for(config.poll.interval, config.poll.timeout, retry),
    )


def _place(workspace: WorkspaceConfig) -> tuple[str, str]:
    """Where a workspace's numbers come from and how their dates read."""
    return workspace.base_url, workspace.time_zone


def _connections(config: Config) -> tuple[float, int]:
    """What every client's connections are built with."""
    return config.poll.timeout, config.poll.concurrency
