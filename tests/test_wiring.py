"""Exporter.apply: a reloaded config put to use in one step, keeping what did not change."""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from exporter.config import Config, validate_config
from exporter.poller import Outcome
from exporter.simulator import BrazeSimulator, Fault
from exporter.wiring import Exporter, build_exporter
from tests.conftest import KEY_ENV, PROD_KEY, STAGE_KEY, config_data, wait_until

ROTATED = "prod-key-rotated-0123456789"


def config_of(data: dict[str, Any], env: dict[str, str] = KEY_ENV) -> Config:
    return validate_config(data, environ=env)


def keys(env: dict[str, str] = KEY_ENV) -> dict[str, SecretStr]:
    return {"prod": SecretStr(env["PROD_KEY"]), "stage": SecretStr(env["STAGE_KEY"])}


@pytest.fixture
def exporter(sim: BrazeSimulator) -> Iterator[Exporter]:
    built = build_exporter(config_of(config_data(sim.url)), keys())
    assert built.poller.run_cycle() == {Outcome.SUCCEEDED: 5}
    yield built
    built.poller.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def without_app(data: dict[str, Any], workspace: int, app: str) -> dict[str, Any]:
    apps = data["workspaces"][workspace]["apps"]
    data["workspaces"][workspace]["apps"] = [a for a in apps if a["name"] != app]
    return data


def test_apply_keeps_unchanged_series_and_swaps_the_rest_in_one_step(
    sim: BrazeSimulator, exporter: Exporter
) -> None:
    registry = exporter.registry
    ios = value(registry, "braze_monthly_active_users", workspace="prod", app="ios")
    success = value(
        registry, "braze_last_success_timestamp_seconds", workspace="prod", app="ios", kpi="mau"
    )
    client = exporter.poller.plan.clients["prod"]
    data = without_app(config_data(sim.url, kpis=["mau", "dau"]), 0, "web")
    new = exporter.apply(config_of(data), keys())
    assert {(s.workspace, s.app, s.kpi.name) for s in new} == {
        ("prod", None, "dau"),
        ("prod", "ios", "dau"),
        ("stage", None, "dau"),
        ("stage", "ios", "dau"),
    }
    assert value(registry, "braze_monthly_active_users", workspace="prod", app="web") is None
    assert value(registry, "braze_app_info", workspace="prod", app="web", app_id="app-web") is None
    assert value(registry, "braze_monthly_active_users", workspace="prod", app="ios") == ios
    assert (
        value(
            registry, "braze_last_success_timestamp_seconds", workspace="prod", app="ios", kpi="mau"
        )
        == success
    )
    assert exporter.poller.plan.clients["prod"] is client  # connections and pause kept
    sim.clear_requests()
    assert exporter.poller.poll_new_series(new) == {Outcome.SUCCEEDED: 4}
    assert {r.params.get("app_id") for r in sim.requests} == {None, "app-ios", "app-stage"}
    assert all("/dau/" in r.path for r in sim.requests)
    assert exporter.store.cycles_completed == 1  # a round of new series is not a cycle
    assert exporter.poller.run_cycle() == {Outcome.SUCCEEDED: 8}


def test_a_rotated_key_goes_into_the_same_client(sim: BrazeSimulator, exporter: Exporter) -> None:
    client = exporter.poller.plan.clients["prod"]
    sim.rotate_key(PROD_KEY, ROTATED)
    env = {**KEY_ENV, "PROD_KEY": ROTATED}
    exporter.apply(config_of(config_data(sim.url), env), keys(env))
    assert exporter.poller.plan.clients["prod"] is client
    sim.clear_requests()
    assert exporter.poller.run_cycle() == {Outcome.SUCCEEDED: 5}
    assert {r.api_key for r in sim.requests} == {ROTATED, STAGE_KEY}


def test_a_new_url_or_zone_starts_the_workspace_over(
    sim: BrazeSimulator, exporter: Exporter
) -> None:
    registry = exporter.registry
    old_client = exporter.poller.plan.clients["stage"]
    data = config_data(sim.url)
    data["workspaces"][1]["time_zone"] = "Europe/Berlin"  # type: ignore[index]
    new = exporter.apply(config_of(data), keys())
    assert {(s.workspace, s.app) for s in new} == {("stage", None), ("stage", "ios")}
    assert exporter.poller.plan.clients["stage"] is not old_client
    assert value(registry, "braze_workspace_monthly_active_users", workspace="stage") is None
    assert value(registry, "braze_workspace_monthly_active_users", workspace="prod") is not None
    with pytest.raises(Exception, match="cancelled"):  # the old client is closed
        old_client.newest_point(exporter.poller.plan.series[0].kpi, 3)


def test_new_poll_settings_carry_the_rate_limit_pause(
    sim: BrazeSimulator, exporter: Exporter
) -> None:
    reset = int(time.time()) + 3600
    sim.inject(Fault(status=429, api_key=PROD_KEY, headers={"X-RateLimit-Reset": str(reset)}))
    exporter.poller.run_cycle()
    paused = exporter.poller.plan.clients["prod"].paused_until
    assert paused >= reset
    exporter.apply(config_of(config_data(sim.url, timeout="3s")), keys())
    assert exporter.poller.plan.clients["prod"].paused_until == paused
    sim.clear_requests()
    outcomes = exporter.poller.run_cycle()
    assert outcomes is not None and outcomes[Outcome.SKIPPED] == 3
    assert {r.api_key for r in sim.requests} == {STAGE_KEY}  # prod sends nothing until then


def test_new_series_wait_for_a_running_cycle(sim: BrazeSimulator, exporter: Exporter) -> None:
    sim.inject(Fault(delay=0.5, times=5))
    results: list[Counter[Outcome] | None] = []
    cycle = threading.Thread(target=lambda: results.append(exporter.poller.run_cycle()))
    cycle.start()
    wait_until(lambda: len(sim.requests) > 5, "the cycle to start")
    data = config_data(sim.url, kpis=["mau", "dau"])
    new = exporter.apply(config_of(data), keys())
    assert exporter.poller.poll_new_series(new) == {Outcome.SUCCEEDED: 5}  # after the cycle
    cycle.join(10)
    assert results == [{Outcome.SUCCEEDED: 5}]


def test_a_cycle_waits_behind_a_round_of_new_series(
    sim: BrazeSimulator, exporter: Exporter
) -> None:
    new = exporter.apply(config_of(config_data(sim.url, kpis=["mau", "dau"])), keys())
    sim.inject(Fault(delay=0.5, kpi="dau", times=5))
    sent = len(sim.requests)
    results: list[Counter[Outcome] | None] = []
    round_ = threading.Thread(target=lambda: results.append(exporter.poller.poll_new_series(new)))
    round_.start()
    wait_until(lambda: len(sim.requests) > sent, "the round to start")
    assert exporter.poller.run_cycle() == {Outcome.SUCCEEDED: 10}  # not skipped
    round_.join(10)
    assert results == [{Outcome.SUCCEEDED: 5}]
