"""End to end, as a user runs it: simulator -> exporter (CLI) -> a real Prometheus with our rules.

Prometheus scrapes the exporter every second on loopback and loads monitoring/'s rules file.
Eight days of history, as the exporter would have served them, are backfilled with
`promtool tsdb create-blocks-from openmetrics` first, so that the 7-day and 1-day ratios
(and the dashboard panels built on them) have the old points they compare with.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

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
HISTORY_STEP = 120  # seconds between backfilled samples, well inside the 5m lookback
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
        return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200

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


def midnight(day: datetime.date) -> int:
    return int(
        datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()
    )


def history(sim: BrazeSimulator, instance: str, start: float, end: float) -> str:
    """OpenMetrics text of what the exporter served between start and end (every 2 minutes)."""
    families: dict[str, list[str]] = {
        "braze_monthly_active_users": [],
        "braze_workspace_monthly_active_users": [],
        "braze_kpi_point_timestamp_seconds": [],
    }
    workspaces: tuple[SimWorkspace, ...] = (PROD, STAGE)
    for moment in range(int(start), int(end), HISTORY_STEP):
        day = datetime.datetime.fromtimestamp(
            moment, datetime.timezone.utc
        ).date() - datetime.timedelta(1)
        for workspace in workspaces:
            for app in (None, *workspace.apps):
                labels = f'job="{JOB}",instance="{instance}",workspace="{workspace.name}"'
                if app is None:
                    metric = "braze_workspace_monthly_active_users"
                else:
                    metric = "braze_monthly_active_users"
                    labels += f',app="{app.name}"'
                value = sim.expected_value(
                    workspace.api_key, "mau", app.app_id if app else None, day
                )
                families[metric].append(f"{metric}{{{labels}}} {value} {moment}")
                families["braze_kpi_point_timestamp_seconds"].append(
                    f'braze_kpi_point_timestamp_seconds{{{labels},kpi="mau"}} '
                    f"{midnight(day)} {moment}"
                )
    lines = []
    for name, samples in families.items():
        lines += [f"# TYPE {name} gauge", *samples]
    return "\n".join([*lines, "# EOF", ""])


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
    config = write_config(tmp_path / "config.yaml", config_data(sim.url, interval="1s"))
    with serving_exporter(config, KEY_ENV) as (_, exporter_url):
        instance = exporter_url.removeprefix("http://")
        data_dir = tmp_path / "data"
        openmetrics = tmp_path / "history.om"
        now = time.time()
        openmetrics.write_text(history(sim, instance, now - 8 * DAY, now - 600))
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
        for target in panel["targets"]:
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


def test_prometheus_scrapes_the_exporter_evaluates_the_rules_and_feeds_the_dashboard(
    sim: BrazeSimulator, stack: tuple[Prometheus, str]
) -> None:
    prometheus, instance = stack
    wait_until(lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), "up == 1", timeout=30)

    # The MAU series are there, with the simulator's values and the exporter's labels.
    newest = sim.newest_day()
    expected = {
        ("prod", "ios"): sim.expected_value(PROD.api_key, "mau", "app-ios", newest),
        ("prod", "web"): sim.expected_value(PROD.api_key, "mau", "app-web", newest),
        ("stage", "ios"): sim.expected_value(STAGE.api_key, "mau", "app-stage", newest),
    }
    wait_until(
        lambda: (
            len(prometheus.query("braze_monthly_active_users")) == 3
            and len(prometheus.query("braze_workspace_monthly_active_users")) == 2
        ),
        "every MAU series",
    )
    served = {
        (r["metric"]["workspace"], r["metric"]["app"]): float(r["value"][1])
        for r in prometheus.query("braze_monthly_active_users")
    }
    assert served == expected
    for result in prometheus.query("braze_monthly_active_users"):
        assert set(result["metric"]) == {"__name__", "job", "instance", "workspace", "app"}
        assert (result["metric"]["job"], result["metric"]["instance"]) == (JOB, instance)
    whole = {
        r["metric"]["workspace"]: float(r["value"][1])
        for r in prometheus.query("braze_workspace_monthly_active_users")
    }
    assert whole == {
        workspace.name: sim.expected_value(workspace.api_key, "mau", None, newest)
        for workspace in (PROD, STAGE)
    }

    # Every rule loads and evaluates with health ok.
    def rules_healthy() -> bool:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == 15 and all(rule["health"] == "ok" for rule in rules)

    wait_until(rules_healthy, "every rule to evaluate with health ok", timeout=30)

    # The 7-day ratio compares today's point with the backfilled one of 7 days earlier.
    week_ago = newest - datetime.timedelta(days=7)
    ratio_query = 'workspace_app:braze_monthly_active_users:ratio_7d{app="web"}'
    wait_until(lambda: prometheus.query(ratio_query), "the 7-day ratio to be recorded")
    ratios = prometheus.query(ratio_query)
    assert len(ratios) == 1
    assert float(ratios[0]["value"][1]) == pytest.approx(
        expected["prod", "web"] / sim.expected_value(PROD.api_key, "mau", "app-web", week_ago)
    )

    # Each dashboard query, its variables substituted, is accepted and returns data.
    for title, expr in dashboard_queries():
        wait_until(partial(prometheus.query, expr), f"data for panel {title!r}: {expr}")
    for name, selector, label in dashboard_variable_queries():
        values = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert values, f"variable {name}: no values for {selector}"

    # Normal simulated data fires no MAU alert.
    assert prometheus.query('ALERTS{alertname=~"BrazeMonthlyActiveUsers.*"}') == []

    # A persistent Braze fault: Prometheus sees the polls fail.
    sim.inject(Fault(status=500))
    wait_until(
        lambda: len(prometheus.query("braze_last_poll_success == 0")) == 5,
        "braze_last_poll_success to turn 0 for every series",
        timeout=30,
    )
