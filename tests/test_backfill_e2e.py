"""End to end, the README's backfill path: simulator -> `braze-exporter --backfill 10d` ->
`promtool tsdb create-blocks-from openmetrics` -> the blocks moved into a real Prometheus's
data directory, with monitoring/'s rules loaded -> `promtool tsdb create-blocks-from rules`.

Nothing scrapes: Prometheus holds only the backfilled history, and what it answers for a past
time must be what the live exporter would have served then, the newest point complete at that
time. The week-over-week recording rules must evaluate on it at once, which is the point of
backfilling. One workspace is in Europe/Berlin, so days are not UTC days.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from exporter.kpis import SUPPORTED_KPIS, Kpi
from exporter.simulator import BrazeSimulator, RecordedRequest, SimApp, SimWorkspace
from tests.conftest import (
    KEY_ENV,
    PROD,
    RULES_FILE,
    STAGE,
    config_data,
    required_tool,
    wait_until,
    write_config,
)
from tests.test_prometheus_e2e import Prometheus, period_start, served_period

JOB = "braze-exporter"
INSTANCE = "backfill"
DAY = 86_400
HOUR = 3_600
DAYS = 10
STEP = 60  # --backfill.step's default
# promtool reads the whole file once for every block it writes; its default 2h blocks would
# make 10 days 120 passes. The README recommends longer blocks.
MAX_BLOCK_DURATION = "240h"
# Past times to look at, before the backfill's start (rounded down to a step, so that a sample
# lies exactly there): the oldest days, the middle, the last days, the last hours.
AGES = (9 * DAY, 5 * DAY + 13 * HOUR, 2 * DAY + 40 * 60, 3 * HOUR)
POINT_TIMESTAMP = "braze_kpi_point_timestamp_seconds"
Period = datetime.date | datetime.datetime  # a local date, or an hour's aware start
STAGE_BERLIN = dataclasses.replace(STAGE, time_zone="Europe/Berlin")
WORKSPACES: tuple[SimWorkspace, ...] = (PROD, STAGE_BERLIN)
KINDS = tuple(SUPPORTED_KPIS.values())
KIND_OF_METRIC = {
    metric: kind for kind in KINDS for metric in (kind.app_metric, kind.workspace_metric)
}
SESSIONS_PATH = "/sessions/data_series"
# Paging slack: a page or two may reach a period past either end of the window.
SLACK_HOURS = 3
SLACK_DAYS = 3
MAX_LENGTH = 100  # Braze's limit of points per request


@dataclass(frozen=True)
class Backfill:
    """One run of the CLI's backfill against the simulator, and what it left."""

    sim: BrazeSimulator
    output: Path
    started: float  # time.time() just before the CLI ran...
    finished: float  # ...and just after it exited: the CLI's "now" lies in between
    requests: list[RecordedRequest]
    stderr: str


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfill]:
    tmp = tmp_path_factory.mktemp("backfill")
    with BrazeSimulator(WORKSPACES) as sim:
        data = config_data(sim.url, kpis=[kind.name for kind in KINDS])
        data["workspaces"][1]["time_zone"] = STAGE_BERLIN.time_zone  # type: ignore[index]
        config = write_config(tmp / "config.yaml", data)
        output = tmp / "braze.om"
        started = time.time()
        command = [sys.executable, "-m", "exporter", "--config.file", str(config)]
        run = subprocess.run(
            [*command, "--backfill", f"{DAYS}d", "--backfill.output", str(output)],
            capture_output=True,
            text=True,
            env={**os.environ, **KEY_ENV},
            timeout=120,
        )
        finished = time.time()
        assert run.returncode == 0, run.stderr
        yield Backfill(sim, output, started, finished, sim.requests, run.stderr)


@dataclass(frozen=True)
class Server:
    prometheus: Prometheus
    promtool: str


@pytest.fixture(scope="module")
def server(backfill: Backfill, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The backfilled blocks in a real Prometheus's data directory, as the README moves them."""
    prometheus_binary = required_tool("prometheus", "Debian package prometheus")
    promtool = required_tool("promtool", "Debian package prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    blocks, data_dir = tmp / "blocks", tmp / "data"
    created = subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={MAX_BLOCK_DURATION}",
            str(backfill.output),
            str(blocks),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    data_dir.mkdir()
    for block in blocks.iterdir():
        shutil.move(block, data_dir / block.name)
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"evaluation_interval": "1s"}, "rule_files": [str(RULES_FILE)]})
    )
    prometheus = Prometheus(prometheus_binary, config, data_dir, tmp / "log")
    try:
        yield Server(prometheus, promtool)
    finally:
        prometheus.stop()


# --- The oracle: what the live exporter would have served ---------------------------------


def workspace_named(name: str) -> SimWorkspace:
    [workspace] = [w for w in WORKSPACES if w.name == name]
    return workspace


def app_named(workspace: SimWorkspace, name: str | None) -> SimApp | None:
    if name is None:
        return None
    [app] = [a for a in workspace.apps if a.name == name]
    return app


class Oracle:
    """The value of any backfilled series at any time, from the simulator's value model."""

    def __init__(self, sim: BrazeSimulator) -> None:
        self._sim = sim
        self._values: dict[tuple[str, str, str | None, Period], int] = {}

    def sample(self, labels: dict[str, str], moment: int) -> float:
        """The value a series with `labels` (`__name__` included) has at `moment`."""
        workspace = workspace_named(labels["workspace"])
        zone = ZoneInfo(workspace.time_zone)
        name = labels["__name__"]
        kind = SUPPORTED_KPIS[labels["kpi"]] if name == POINT_TIMESTAMP else KIND_OF_METRIC[name]
        period = served_period(kind, zone, moment)
        if name == POINT_TIMESTAMP:
            return period_start(period, zone)
        app = app_named(workspace, labels.get("app"))
        return self.value(workspace, kind, app, period)

    def value(
        self,
        workspace: SimWorkspace,
        kind: Kpi,
        app: SimApp | None,
        period: Period,
    ) -> int:
        key = (workspace.api_key, kind.name, app.app_id if app else None, period)
        if key not in self._values:
            self._values[key] = self._sim.expected_value(*key)
        return self._values[key]

    def snapshot(self, moment: int) -> dict[frozenset[tuple[str, str]], float]:
        """Every backfilled series (its labels) and its value at `moment`."""
        expected = {}
        for workspace in WORKSPACES:
            for kind in KINDS:
                for app in (None, *workspace.apps):
                    target = {"job": JOB, "instance": INSTANCE, "workspace": workspace.name}
                    if app is not None:
                        target["app"] = app.name
                    metric = kind.app_metric if app else kind.workspace_metric
                    for labels in (
                        {"__name__": metric, **target},
                        {"__name__": POINT_TIMESTAMP, **target, "kpi": kind.name},
                    ):
                        expected[frozenset(labels.items())] = self.sample(labels, moment)
        return expected


def labelled(results: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], float]:
    return {frozenset(r["metric"].items()): float(r["value"][1]) for r in results}


# --- Requests: paged, and no more than the window needs -----------------------------------


def kind_of(request: RecordedRequest) -> Kpi:
    if request.path == SESSIONS_PATH:
        return SUPPORTED_KPIS[
            "sessions_hourly" if request.params.get("unit") == "hour" else "sessions"
        ]
    return SUPPORTED_KPIS[request.path.split("/")[2]]


def ending_of(request: RecordedRequest) -> float:
    """The instant a request's newest period contains: `ending_at`, at most the time it came."""
    raw = request.params.get("ending_at")
    if raw is None:
        return request.time
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw  # Python 3.10
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:  # Braze reads it as UTC
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return min(parsed.timestamp(), request.time)


def periods_asked(kind: Kpi, zone: ZoneInfo, request: RecordedRequest) -> set[object]:
    """The periods a request asks for, as Braze counts them: `length` days (local dates) or
    hours (start as Unix time; whole-hour offsets only) back from its ending, which is
    itself among them, except MAU's, whose newest day is the one before."""
    length = int(request.params["length"])
    ending = ending_of(request)
    if kind.unit == "hour":
        newest = int(ending) // HOUR * HOUR
        return {newest - back * HOUR for back in range(length)}
    last = datetime.datetime.fromtimestamp(ending, zone).date()
    if kind.name == "mau":
        last -= datetime.timedelta(days=1)
    return {last - datetime.timedelta(days=back) for back in range(length)}


def periods_needed(kind: Kpi, zone: ZoneInfo, run: Backfill) -> set[object]:
    """The periods served at some time of the window, whenever within the run its "now" was."""
    first = served_period(kind, zone, run.finished - DAYS * DAY)
    last = served_period(kind, zone, run.started)
    if isinstance(first, datetime.datetime):
        start, end = period_start(first, zone), period_start(last, zone)
        return set(range(start, end + 1, HOUR))
    assert isinstance(last, datetime.date)
    return {first + datetime.timedelta(days=n) for n in range((last - first).days + 1)}


def test_backfill_pages_through_braze_and_asks_for_no_more_than_the_window(
    backfill: Backfill,
) -> None:
    assert 'msg="backfill progress"' in backfill.stderr  # log lines, not a bar: no terminal
    assert 'msg="backfill failed"' not in backfill.stderr
    series: dict[tuple[str, str, str | None], list[RecordedRequest]] = {}
    for request in backfill.requests:
        assert request.status == 200, request
        key = (request.api_key or "", kind_of(request).name, request.params.get("app_id"))
        series.setdefault(key, []).append(request)
    assert len(series) == len(KINDS) * sum(1 + len(w.apps) for w in WORKSPACES)

    for (api_key, kind_name, app_id), requests in series.items():
        kind = SUPPORTED_KPIS[kind_name]
        zone = ZoneInfo(next(w for w in WORKSPACES if w.api_key == api_key).time_zone)
        lengths = [int(r.params["length"]) for r in requests]
        where = (
            api_key[:4],
            kind_name,
            app_id,
            [(r.params.get("ending_at"), r.params["length"]) for r in requests],
        )
        assert max(lengths) <= MAX_LENGTH, where
        if kind.unit == "hour":  # 240 hours: at least 3 pages, each ending elsewhere
            assert len(requests) >= 3, where
            assert len({r.params.get("ending_at") for r in requests}) == len(requests), where
            assert sum(lengths) <= DAYS * 24 + SLACK_HOURS, where
        else:
            assert sum(lengths) <= DAYS + SLACK_DAYS, where
        asked = set().union(*(periods_asked(kind, zone, r) for r in requests))
        missing = periods_needed(kind, zone, backfill) - asked
        assert not missing, (where, sorted(missing))  # type: ignore[type-var]


def test_the_output_is_one_gauge_family_per_metric_ending_with_eof(backfill: Backfill) -> None:
    types: dict[str, list[str]] = {}
    helps: dict[str, int] = {}
    last = ""
    with backfill.output.open() as output:
        for line in output:
            last = line
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                types.setdefault(name, []).append(kind)
            elif line.startswith("# HELP "):
                name = line.split()[2]
                helps[name] = helps.get(name, 0) + 1
    metrics = {POINT_TIMESTAMP, *KIND_OF_METRIC}
    assert types == {name: ["gauge"] for name in metrics}
    assert helps == dict.fromkeys(metrics, 1)
    assert last == "# EOF\n"


# --- In Prometheus -------------------------------------------------------------------------


def query_at(prometheus: Prometheus, expr: str, moment: float) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus.api("query", query=expr, time=f"{moment:.3f}")[
        "result"
    ]
    return result


def test_prometheus_answers_for_past_times_what_the_exporter_would_have_served(
    backfill: Backfill, server: Server
) -> None:
    oracle = Oracle(backfill.sim)
    anchor = int(backfill.started) // STEP * STEP  # a sample time: the CLI's now is later
    for age in AGES:
        moment = anchor - age
        served = query_at(server.prometheus, f'{{job="{JOB}", __name__=~"braze_.+"}}', moment)
        expected = oracle.snapshot(moment)
        assert labelled(served) == expected, (
            f"at {datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)}",
            sorted(set(labelled(served).items()) ^ set(expected.items()), key=str)[:10],
        )


def test_every_sample_is_the_newest_point_complete_at_its_time(
    backfill: Backfill, server: Server
) -> None:
    """Every sample of every series of the Berlin workspace: one each step from the start of
    the window to its end, its value the point complete then (days cut at Berlin's midnight,
    hours at their end)."""
    oracle = Oracle(backfill.sim)
    window = f"{DAYS + 1}d"
    results = query_at(
        server.prometheus, f'{{job="{JOB}", workspace="stage"}}[{window}]', backfill.finished
    )
    assert len(results) == len(KINDS) * 2 * (1 + len(STAGE_BERLIN.apps))
    first_earliest = -(-(backfill.started - DAYS * DAY) // STEP) * STEP
    first_latest = -(-(backfill.finished - DAYS * DAY) // STEP) * STEP
    for result in results:
        labels: dict[str, str] = result["metric"]
        times = [int(float(t)) for t, _ in result["values"]]
        assert first_earliest <= times[0] <= first_latest, (labels, times[0])
        assert backfill.started - STEP < times[-1] <= backfill.finished, (labels, times[-1])
        assert times == list(range(times[0], times[-1] + 1, STEP)), labels
        wrong = [
            (t, float(v), oracle.sample(labels, t))
            for t, v in result["values"]
            if float(v) != oracle.sample(labels, int(float(t)))
        ]
        assert not wrong, (labels, wrong[:5])


RATIOS = {
    "dau": (
        "workspace_app:braze_daily_active_users:ratio_7d",
        "workspace:braze_workspace_daily_active_users:ratio_7d",
    ),
    "sessions_hourly": (
        "workspace_app:braze_hourly_sessions:ratio_7d",
        "workspace:braze_workspace_hourly_sessions:ratio_7d",
    ),
}


def week_before(period: Period) -> Period:
    if isinstance(period, datetime.datetime):  # an hour: 168 hours earlier, counted in UTC
        utc = period.astimezone(datetime.timezone.utc) - datetime.timedelta(days=7)
        return utc.astimezone(period.tzinfo)
    return period - datetime.timedelta(days=7)


def test_the_week_over_week_rules_evaluate_on_the_backfilled_history(
    backfill: Backfill, server: Server
) -> None:
    """Prometheus evaluates the rules at its now: the backfill reaches up to the run, so the
    newest points are its last samples and the week-ago ones are backfilled too."""
    oracle = Oracle(backfill.sim)
    prometheus = server.prometheus
    series_count = sum(1 + len(w.apps) for w in WORKSPACES)
    for kind_name, records in RATIOS.items():
        kind = SUPPORTED_KPIS[kind_name]
        query = " or ".join(records)

        def every_series(query: str = query) -> bool:
            return len(prometheus.query(query)) == series_count

        wait_until(every_series, f"a ratio of every series: {query}")
        evaluated = time.time()
        for result in prometheus.query(query):
            labels = result["metric"]
            assert set(labels) <= {"__name__", "workspace", "app"}, labels  # no job, instance
            workspace = workspace_named(labels["workspace"])
            app = app_named(workspace, labels.get("app"))
            zone = ZoneInfo(workspace.time_zone)
            # The newest point is the one served at the CLI's now; the rule's offset 7d looks
            # back from Prometheus's now: an hour or day may have turned in between.
            ratios = {
                oracle.value(workspace, kind, app, newest)
                / oracle.value(workspace, kind, app, week_before(older))
                for newest in {
                    served_period(kind, zone, t) for t in (backfill.started, backfill.finished)
                }
                for older in {served_period(kind, zone, t) for t in (backfill.started, evaluated)}
            }
            value = float(result["value"][1])
            assert any(value == pytest.approx(ratio) for ratio in ratios), (labels, value, ratios)


def test_promtool_backfills_the_recording_rules_from_the_backfilled_history(
    backfill: Backfill, server: Server, tmp_path: Path
) -> None:
    end = int(backfill.started) - 10 * 60
    blocks = tmp_path / "rule-blocks"
    created = subprocess.run(
        [
            server.promtool,
            "tsdb",
            "create-blocks-from",
            "rules",
            f"--start={end - HOUR}",
            f"--end={end}",
            f"--url={server.prometheus.url}",
            f"--output-dir={blocks}",
            str(RULES_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    metas = [json.loads(meta.read_text()) for meta in blocks.glob("*/meta.json")]
    assert metas, created.stdout  # a block per rule and 2-hour window
    assert all(meta["stats"]["numSamples"] > 0 for meta in metas)
    (blocks / "wal").mkdir()  # dump opens the directory as a (read-only) TSDB, which has one
    dumped = subprocess.run(
        [server.promtool, "tsdb", "dump", str(blocks)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dumped.returncode == 0, dumped.stderr
    recorded = set(re.findall(r'__name__="([^"]+)"', dumped.stdout))
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    records = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    assert recorded == records
