"""End to end, as a user runs it: simulator -> exporter (CLI) -> a real Prometheus with our rules.

Prometheus scrapes the exporter every second on loopback and loads monitoring/'s rules file.
The exporter polls all six kinds; one workspace is in Europe/Berlin. Windows of history around
7 days and 1 day ago, as an earlier exporter pod would have served them, are backfilled with
`promtool tsdb create-blocks-from openmetrics` first. They carry other `instance` and `pod`
labels than the live exporter, as after a redeploy: the week-over-week rules and the
dashboard's week-ago overlays must match the two across the restart.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from exporter.kpis import SUPPORTED_KPIS, Kpi
from exporter.simulator import BrazeSimulator, Fault, SimWorkspace
from tests.conftest import (
    DASHBOARD_FILE,
    KEY_ENV,
    PROD,
    RULES_FILE,
    STAGE,
    config_data,
    required_tool,
    serving_exporter,
    wait_until,
    write_config,
)

JOB = "braze-exporter"
DAY = 86_400
HISTORY_STEP = 60  # seconds between backfilled samples, well inside the 5m lookback
HISTORY_WINDOW = 2 * 3600  # backfilled either side of 7 days and of 1 day ago
OLD_TARGET = {"instance": "10.1.2.3:9877", "pod": "braze-exporter-7c9d8-old"}
STAGE_BERLIN = dataclasses.replace(STAGE, time_zone="Europe/Berlin")
WORKSPACES: tuple[SimWorkspace, ...] = (PROD, STAGE_BERLIN)
KINDS = tuple(SUPPORTED_KPIS.values())
# What Grafana puts into the dashboard's queries with "All" selected, and a rate window of
# several 1 s scrapes.
VARIABLES = {"$workspace": ".*", "$app": ".*", "$__rate_interval": "15s"}


class Prometheus:
    """A real Prometheus server on a free loopback port, queried through its HTTP API."""

    def __init__(self, binary: str, config: Path, data_dir: Path, log: Path) -> None:
        self._log = log
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=info",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        self.url = ""
        wait_until(self._listening, "Prometheus to listen", timeout=30)
        wait_until(self._ready, "Prometheus to be ready", timeout=30)

    def _listening(self) -> bool:
        if self._process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self._log.read_text()}")
        found = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self._log.read_text())
        if found:
            self.url = f"http://{found.group(1)}"
        return found is not None

    def _ready(self) -> bool:
        if self._process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self._log.read_text()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except requests.ConnectionError:  # still starting up
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def served_period(kind: Kpi, zone: ZoneInfo, moment: float) -> datetime.date | datetime.datetime:
    """The period whose point the exporter serves at `moment`: the newest complete one. An
    oracle of its own: the local day before today, or the hour before the current one."""
    local = datetime.datetime.fromtimestamp(moment, zone)
    if kind.unit == "hour":
        current = local.replace(minute=0, second=0, microsecond=0)
        return (current.astimezone(datetime.timezone.utc) - datetime.timedelta(hours=1)).astimezone(
            zone
        )
    return local.date() - datetime.timedelta(days=1)


def period_start(period: datetime.date | datetime.datetime, zone: ZoneInfo) -> int:
    if isinstance(period, datetime.datetime):
        return int(period.timestamp())
    return int(datetime.datetime(period.year, period.month, period.day, tzinfo=zone).timestamp())


def history(sim: BrazeSimulator, moments: list[int]) -> str:
    """OpenMetrics text of what an earlier exporter pod served at `moments`, for every kind."""
    families: dict[str, list[str]] = {"braze_kpi_point_timestamp_seconds": []}
    target = ",".join(f'{k}="{v}"' for k, v in {"job": JOB, **OLD_TARGET}.items())
    for moment in moments:
        for workspace in WORKSPACES:
            zone = ZoneInfo(workspace.time_zone)
            for kind in KINDS:
                period = served_period(kind, zone, moment)
                for app in (None, *workspace.apps):
                    labels = f'{target},workspace="{workspace.name}"'
                    metric = kind.workspace_metric if app is None else kind.app_metric
                    if app is not None:
                        labels += f',app="{app.name}"'
                    value = sim.expected_value(
                        workspace.api_key, kind.name, app.app_id if app else None, period
                    )
                    families.setdefault(metric, []).append(f"{metric}{{{labels}}} {value} {moment}")
                    families["braze_kpi_point_timestamp_seconds"].append(
                        f'braze_kpi_point_timestamp_seconds{{{labels},kpi="{kind.name}"}} '
                        f"{period_start(period, zone)} {moment}"
                    )
    lines = []
    for name, samples in families.items():
        lines += [f"# TYPE {name} gauge", *samples]
    return "\n".join([*lines, "# EOF", ""])


def history_moments(now: float) -> list[int]:
    moments: list[int] = []
    for ago in (7 * DAY, DAY):
        centre = int(now) - ago
        moments += range(centre - HISTORY_WINDOW, centre + HISTORY_WINDOW, HISTORY_STEP)
    return moments


@pytest.fixture
def sim() -> Iterator[BrazeSimulator]:
    with BrazeSimulator(WORKSPACES) as simulator:
        yield simulator


@pytest.fixture
def prometheus_binaries() -> tuple[str, str]:
    return (
        required_tool("prometheus", "Debian package prometheus"),
        required_tool("promtool", "Debian package prometheus"),
    )


@pytest.fixture
def stack(
    sim: BrazeSimulator, tmp_path: Path, prometheus_binaries: tuple[str, str]
) -> Iterator[tuple[Prometheus, str]]:
    """The exporter polling the simulator every second, scraped by a real Prometheus."""
    prometheus_binary, promtool = prometheus_binaries
    data = config_data(sim.url, interval="1s", timeout="1s", kpis=[kind.name for kind in KINDS])
    data["workspaces"][1]["time_zone"] = STAGE_BERLIN.time_zone  # type: ignore[index]
    config = write_config(tmp_path / "config.yaml", data)
    with serving_exporter(config, KEY_ENV) as (_, exporter_url):
        instance = exporter_url.removeprefix("http://")
        data_dir = tmp_path / "data"
        openmetrics = tmp_path / "history.om"
        openmetrics.write_text(history(sim, history_moments(time.time())))
        backfill = subprocess.run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(openmetrics),
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        prometheus_config = tmp_path / "prometheus.yml"
        prometheus_config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES_FILE)],
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "honor_labels": True,
                            "static_configs": [{"targets": [instance]}],
                        }
                    ],
                }
            )
        )
        server = Prometheus(prometheus_binary, prometheus_config, data_dir, tmp_path / "log")
        try:
            yield server, instance
        finally:
            server.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):  # rows have none
            queries.append((panel["title"], substitute(target["expr"])))
    return queries


def dashboard_variable_queries() -> list[tuple[str, str, str]]:
    """(name, series selector, label) of each `label_values(selector, label)` variable."""
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert found, variable["query"]
            queries.append((variable["name"], substitute(found.group(1)), found.group(2)))
    return queries


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def expected_values(sim: BrazeSimulator, kind: Kpi) -> dict[tuple[str, str], float]:
    """(workspace, app or "") -> the value of the period the exporter should serve now."""
    expected: dict[tuple[str, str], float] = {}
    for workspace in WORKSPACES:
        period = served_period(kind, ZoneInfo(workspace.time_zone), time.time())
        for app in (None, *workspace.apps):
            expected[workspace.name, app.name if app else ""] = sim.expected_value(
                workspace.api_key, kind.name, app.app_id if app else None, period
            )
    return expected


def served_values(prometheus: Prometheus, kind: Kpi) -> dict[tuple[str, str], float]:
    results = prometheus.query(kind.app_metric) + prometheus.query(kind.workspace_metric)
    return {
        (r["metric"]["workspace"], r["metric"].get("app", "")): float(r["value"][1])
        for r in results
    }


def rule_count() -> int:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return sum(len(group["rules"]) for group in groups)


def test_prometheus_scrapes_the_exporter_evaluates_the_rules_and_feeds_the_dashboard(
    sim: BrazeSimulator, stack: tuple[Prometheus, str]
) -> None:
    prometheus, instance = stack
    wait_until(lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), "up == 1", timeout=30)

    # Every kind, per app and per whole workspace, with the simulator's values of the newest
    # complete day or hour (Berlin's days for stage) and the exporter's labels.
    for kind in KINDS:

        def values_match(kind: Kpi = kind) -> bool:
            return served_values(prometheus, kind) == expected_values(sim, kind)

        wait_until(values_match, f"the {kind.name} values of every series")
        for result in prometheus.query(kind.app_metric):
            assert set(result["metric"]) == {"__name__", "job", "instance", "workspace", "app"}
            assert (result["metric"]["job"], result["metric"]["instance"]) == (JOB, instance)

    # Every rule loads and evaluates with health ok.
    def rules_healthy() -> bool:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == rule_count() and all(rule["health"] == "ok" for rule in rules)

    wait_until(rules_healthy, "every rule to evaluate with health ok", timeout=30)

    # The week-over-week ratios compare the live pod's points with the old pod's (other
    # instance and pod labels) from 7 days earlier.
    web_id = "app-web"
    for kind_name, record in (
        ("mau", "workspace_app:braze_monthly_active_users:ratio_7d"),
        ("dau", "workspace_app:braze_daily_active_users:ratio_7d"),
    ):
        query = f'{record}{{workspace="prod", app="web"}}'
        wait_until(partial(prometheus.query, query), f"the 7-day ratio {query}")
        newest = served_period(SUPPORTED_KPIS[kind_name], ZoneInfo("UTC"), time.time())
        assert isinstance(newest, datetime.date)
        week_ago = newest - datetime.timedelta(days=7)
        [ratio] = prometheus.query(query)
        assert float(ratio["value"][1]) == pytest.approx(
            sim.expected_value(PROD.api_key, kind_name, web_id, newest)
            / sim.expected_value(PROD.api_key, kind_name, web_id, week_ago)
        )
    hourly = 'workspace_app:braze_hourly_sessions:ratio_7d{workspace="stage"}'
    wait_until(partial(prometheus.query, hourly), f"the hourly sessions ratio {hourly}")

    # Each dashboard query, its variables substituted, is accepted and returns data; the
    # week-ago overlays find the old pod's data; no query splits a series by target.
    for title, expr in dashboard_queries():
        wait_until(partial(prometheus.query, expr), f"data for panel {title!r}: {expr}")
        for result in prometheus.query(expr):
            assert not {"instance", "pod", "job"} & set(result["metric"]), (title, expr)
    for name, selector, label in dashboard_variable_queries():
        values = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert values, f"variable {name}: no values for {selector}"

    # Normal simulated data fires no drop or spike alert.
    assert prometheus.query('ALERTS{alertname=~"Braze.*(Drop|Spike)"}') == []

    # A persistent Braze fault: Prometheus sees the polls of every series fail.
    series_count = len(KINDS) * sum(1 + len(w.apps) for w in WORKSPACES)
    sim.inject(Fault(status=500))
    wait_until(
        lambda: len(prometheus.query("braze_last_poll_success == 0")) == series_count,
        "braze_last_poll_success to turn 0 for every series",
        timeout=30,
    )
