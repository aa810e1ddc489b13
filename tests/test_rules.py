"""The alert and recording rules in monitoring/, unit-tested with `promtool test rules`.

Each scenario is written here as the points the exporter holds, scraped every 5 minutes,
and turned into a promtool test file. promtool's clock starts at 1970-01-01 00:00 UTC, the
workspaces' time zone here (the simulator's test maps its own zones onto that clock). During
day k the exporter holds the daily points of day k - 1; during hour h, from its first poll
a few minutes into the hour, the point of hour h - 1.

Prometheus adds target labels (`job`, `instance`, `pod`) to every scraped series. A restart
starts new series under a new pod, and two replicas serve every series twice, so each alert
is also run through a restart and with two replicas: the rules must see the same data
through them, and raise one alert.

promtool's cost is per rule and evaluation step, so most tests load only the rules of the
alerts they exercise (verbatim from the file, with the records and thresholds those use)
and evaluate as coarsely as their timing allows: hourly for daily points, every 5 minutes
for hourly points, counters and flags. One test runs the whole file on the simulator's data.
"""

from __future__ import annotations

import datetime
import random
import re
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from helm_python.chart import Chart

from exporter.kpis import SUPPORTED_KPIS
from exporter.simulator import DEMO_WORKSPACES, BrazeSimulator
from tests.conftest import REPO, RULES_FILE, required_tool

MINUTE = 60
HOUR = 3_600
DAY = 86_400
STEP = 300  # the scrape interval of the input series (BrazeExporterDown: every minute)
SAMPLES_PER_DAY = DAY // STEP

PODS = tuple(  # scrape targets: the exporter's pods, each with its own address
    {"job": "braze-exporter", "instance": f"10.1.{n}.7:9877", "pod": f"braze-exporter-7d9f-{n}x"}
    for n in range(4)
)
POD, REPLICA = PODS[0], PODS[1]

WEEKLY = "BrazeMonthlyActiveUsersWeeklyDrop"
DAILY = "BrazeMonthlyActiveUsersDailyDrop"
DAU_DROP = "BrazeDailyActiveUsersWeeklyDrop"
NEW_USERS_DROP = "BrazeNewUsersWeeklyDrop"
UNINSTALLS_SPIKE = "BrazeUninstallsSpike"
HOURLY = "BrazeHourlySessionsDrop"
STALE = "BrazeKpiDataStale"
POLLS = "BrazePollsFailing"
REJECTED = "BrazeApiKeyRejected"
LIMITED = "BrazeRateLimited"
DOWN = "BrazeExporterDown"


@pytest.fixture(scope="module")
def promtool() -> str:
    return required_tool("promtool", "Debian package prometheus")


# --- promtool -------------------------------------------------------------------------------


def rule_id(rule: Mapping[str, Any]) -> str:
    return str(rule.get("alert") or rule["record"])


def rules_of(alerts: Collection[str], source: Path = RULES_FILE) -> dict[str, Any]:
    """The rules file cut down to `alerts` and the rules they use: every record named in
    their expressions or annotations, and so on, in the file's order."""
    (group,) = yaml.safe_load(source.read_text())["groups"]
    rules: list[dict[str, Any]] = group["rules"]
    records = [rule["record"] for rule in rules if "record" in rule]
    wanted = set(alerts)
    assert wanted <= {rule_id(rule) for rule in rules}, "no such alert"
    while True:
        text = yaml.safe_dump([rule for rule in rules if rule_id(rule) in wanted])
        used = {r for r in records if re.search(rf"(?<![\w:]){re.escape(r)}(?![\w:])", text)}
        if used <= wanted:
            break
        wanted |= used
    return {"groups": [{**group, "rules": [rule for rule in rules if rule_id(rule) in wanted]}]}


def run_promtool_tests(
    promtool: str,
    tmp_path: Path,
    tests: list[dict[str, Any]],
    *,
    evaluation_interval: str = "1h",
    rules_file: Path = RULES_FILE,
    alerts: Collection[str] | None = None,
) -> None:
    """Run promtool's unit tests on the rules file, or only on the rules of `alerts`."""
    if alerts is not None:
        subset = tmp_path / "subset.rules.yml"
        subset.write_text(yaml.safe_dump(rules_of(alerts, rules_file)))
        rules_file = subset
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules_file)],
                "evaluation_interval": evaluation_interval,
                "tests": tests,
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_of_an_alert_are_the_alert_its_records_and_thresholds() -> None:
    (group,) = rules_of([UNINSTALLS_SPIKE])["groups"]
    assert [rule_id(rule) for rule in group["rules"]] == [
        "braze:daily_uninstalls_weekly_spike:threshold_ratio",
        "braze:daily_uninstalls_spike:threshold_min_count",
        "workspace_app:braze_daily_uninstalls:ratio_7d",
        "workspace:braze_workspace_daily_uninstalls:ratio_7d",
        UNINSTALLS_SPIKE,
    ]


def duration(seconds: int) -> str:
    """promtool's notation of a time, e.g. 8d14h20m."""
    days, rest = divmod(seconds, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    assert rest == 0
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) or "0m"


# --- input series -----------------------------------------------------------------------------


def selector(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"


@dataclass(frozen=True)
class Serving:
    """One scrape target serving a series from sample `start` up to sample `stop`, where
    Prometheus marks the series stale because the target is gone."""

    target: Mapping[str, str]
    start: int = 0
    stop: int | None = None


ONE_POD = (Serving(POD),)
TWO_REPLICAS = (Serving(POD), Serving(REPLICA))


def restarted(*at: int, pods: Sequence[Mapping[str, str]] = (POD, *PODS[2:])) -> list[Serving]:
    """The exporter's pod replaced at each sample in `at`: the old pod's series end there
    and the next pod's start a scrape later (a new pod is ready after its first poll)."""
    bounds = [0, *at]
    return [
        Serving(pod, start=start + (n > 0), stop=stop)
        for n, (pod, start, stop) in enumerate(zip(pods, bounds, [*at, None], strict=False))
    ]


def run_length(tokens: Sequence[str]) -> str:
    """promtool's expanding notation: `7x2` is three samples of 7, `_x3` three missing."""
    runs: list[str] = []
    start = 0
    for end in range(1, len(tokens) + 1):
        if end < len(tokens) and tokens[end] == tokens[start]:
            continue
        token, count = tokens[start], end - start
        if count == 1:
            runs.append(token)
        else:
            runs.append(f"_x{count}" if token == "_" else f"{token}x{count - 1}")
        start = end
    return " ".join(runs)


def scraped(
    name: str,
    labels: Mapping[str, str],
    samples: Sequence[float | None],
    serving: Sequence[Serving] = ONE_POD,
) -> list[dict[str, str]]:
    """The series `name{labels}` with one sample per scrape (None: none yet), as each
    target served it."""
    series = []
    for target in serving:
        stop = len(samples) if target.stop is None else target.stop
        tokens = ["_"] * target.start
        tokens += ["_" if v is None else format(v, ".12g") for v in samples[target.start : stop]]
        if stop < len(samples):
            tokens.append("stale")
        labelled = selector(name, {**target.target, **labels})
        series.append({"series": labelled, "values": run_length(tokens)})
    return series


def place(workspace: str, app: str | None) -> dict[str, str]:
    return {"workspace": workspace} | ({"app": app} if app else {})


def held_points(
    kind: str,
    held: Sequence[tuple[float, float]],
    workspace: str = "production",
    app: str | None = "ios",
    serving: Sequence[Serving] = ONE_POD,
) -> list[dict[str, str]]:
    """The gauge of `kind` and its point timestamp, from (point start, value) per sample."""
    kpi = SUPPORTED_KPIS[kind]
    metric = kpi.app_metric if app else kpi.workspace_metric
    where = place(workspace, app)
    return scraped(metric, where, [value for _, value in held], serving) + scraped(
        "braze_kpi_point_timestamp_seconds",
        where | {"kpi": kind},
        [start for start, _ in held],
        serving,
    )


def daily_points(
    points: Sequence[float],
    workspace: str = "production",
    app: str | None = "ios",
    kind: str = "mau",
    serving: Sequence[Serving] = ONE_POD,
) -> list[dict[str, str]]:
    """A daily kind holding points[k] (the point of day k - 1) during day k."""
    held = [((day - 1) * DAY, value) for day, value in enumerate(points)]
    per_sample = [point for point in held for _ in range(SAMPLES_PER_DAY)]
    return held_points(kind, per_sample, workspace, app, serving)


def at_sample(seconds: int) -> int:
    return seconds // STEP


# --- expected alerts --------------------------------------------------------------------------


def alerts_at(
    eval_time: str, *alerts: Mapping[str, str], where: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Exactly `alerts` (alertname, severity and data labels) are firing at `eval_time`,
    among the alerts matching `where`."""
    matchers = {"alertstate": "firing", **(where or {})}
    return {
        "expr": selector("ALERTS", matchers),
        "eval_time": eval_time,
        "exp_samples": [
            {"labels": selector("ALERTS", {**matchers, **alert}), "value": 1} for alert in alerts
        ],
    }


def firing_at(eval_time: str, *alerts: Mapping[str, str]) -> dict[str, Any]:
    """Exactly `alerts` are firing at `eval_time`, among all alerts of the rules loaded."""
    return alerts_at(eval_time, *alerts)


def never_fired(eval_time: str, window: str, alertnames: str, **where: str) -> dict[str, Any]:
    """No alert matching the `alertnames` regex (and `where`) was pending or firing in
    `window`."""
    matchers = {"alertname=~": alertnames, **{f"{k}=": v for k, v in where.items()}}
    inner = ",".join(f'{key}"{value}"' for key, value in matchers.items())
    return {
        "expr": f"max_over_time(ALERTS{{{inner}}}[{window}])",
        "eval_time": eval_time,
        "exp_samples": [],
    }


def drop_alert(name: str, workspace: str = "production", app: str | None = "ios") -> dict[str, str]:
    return {"alertname": name, "severity": "warning"} | place(workspace, app)


def runbook_url(alertname: str) -> str:
    return (
        "https://github.com/braze-exporter/braze-exporter/blob/main/README.md#" + alertname.lower()
    )


# --- MAU: weekly and daily drop ---------------------------------------------------------------

MAU_ALERTS = (WEEKLY, DAILY)
# Flat for 8 days, then down 1.5 % a day (below the daily threshold) to exactly 90 % of the
# value 7 days earlier on day 14.
TEN_PERCENT_WEEKLY = [100_000] * 8 + [98_500, 97_000, 95_500, 94_000, 92_500, 91_000, 90_000]


def test_ten_percent_weekly_drop_fires(promtool: str, tmp_path: Path) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points([*TEN_PERCENT_WEEKLY, 90_000]),
                "promql_expr_test": [
                    firing_at("13d23h"),  # 91 % of 7 days earlier
                    firing_at("14d"),  # 90 %, but not yet for 1h
                    firing_at("14d1h", drop_alert(WEEKLY)),
                    firing_at("14d23h", drop_alert(WEEKLY)),
                    firing_at("15d2h"),  # 90 000 against 98 500: 91.4 %
                ],
            }
        ],
        alerts=MAU_ALERTS,
    )


def test_a_threshold_set_through_the_chart_moves_the_alert(promtool: str, tmp_path: Path) -> None:
    """The chart's PrometheusRule with weeklyDropRatio 0.12: the 10 % drop no longer fires."""
    values = {"prometheusRule": {"thresholds": {"weeklyDropRatio": 0.12}}}
    with Chart.load(REPO / "helm" / "braze-exporter") as chart:
        manifests = chart.render(values=values, name="braze-exporter", namespace="monitoring")
    rule = yaml.safe_load(manifests["braze-exporter/templates/prometheusrule.yaml"])
    chart_rules = tmp_path / "chart.rules.yml"
    chart_rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    ten_percent = {
        "interval": "5m",
        "input_series": daily_points([*TEN_PERCENT_WEEKLY, 90_000]),
        "promql_expr_test": [never_fired("15d", "16d", WEEKLY)],
    }
    run_promtool_tests(promtool, tmp_path, [ten_percent], rules_file=chart_rules, alerts=[WEEKLY])


def test_ten_percent_weekly_drop_of_whole_workspace_fires(promtool: str, tmp_path: Path) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points(TEN_PERCENT_WEEKLY, app=None),
                "promql_expr_test": [
                    firing_at("13d23h"),
                    firing_at("14d2h", drop_alert(WEEKLY, app=None)),
                ],
            }
        ],
        alerts=MAU_ALERTS,
    )


def test_nine_percent_weekly_drop_does_not_fire(promtool: str, tmp_path: Path) -> None:
    nine_percent = [*TEN_PERCENT_WEEKLY[:-1], 91_000, 91_000, 91_000]
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points(nine_percent),
                "promql_expr_test": [never_fired("16d23h", "17d", "BrazeMonthlyActiveUsers.*")],
            }
        ],
        alerts=MAU_ALERTS,
    )


def test_weekly_drop_alert_shows_the_ratio_and_the_threshold(promtool: str, tmp_path: Path) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points(TEN_PERCENT_WEEKLY),
                "alert_rule_test": [
                    {
                        "eval_time": "14d2h",
                        "alertname": WEEKLY,
                        "exp_alerts": [
                            {
                                "exp_labels": drop_alert(WEEKLY),
                                "exp_annotations": {
                                    "summary": "MAU of app ios in workspace production dropped "
                                    "over 7 days",
                                    "description": "Monthly active users of app ios in "
                                    "workspace production are at 90% of their value 7 days "
                                    "earlier; the alert fires at a drop of 10% or more.",
                                    "runbook_url": runbook_url(WEEKLY),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
        alerts=[WEEKLY],
    )


def test_five_percent_daily_drop_fires_and_four_point_nine_does_not(
    promtool: str, tmp_path: Path
) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points([100_000] * 3 + [95_000, 95_000]),
                "promql_expr_test": [
                    firing_at("2d23h"),
                    firing_at("3d2h", drop_alert(DAILY)),
                    firing_at("4d2h"),  # no further drop
                ],
            },
            {
                "interval": "5m",
                "input_series": daily_points([100_000] * 3 + [95_100, 95_100]),
                "promql_expr_test": [never_fired("4d23h", "5d", "BrazeMonthlyActiveUsers.*")],
            },
        ],
        alerts=MAU_ALERTS,
    )


def test_young_series_cannot_fire_the_weekly_drop(promtool: str, tmp_path: Path) -> None:
    # 2 % down every day: 12 % below day 0 by day 6, but day 0 is not 7 days old until day 7.
    falling = [100_000 - 2_000 * day for day in range(9)]
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": daily_points(falling),
                "promql_expr_test": [
                    never_fired("6d23h", "7d", WEEKLY),
                    firing_at("7d2h", drop_alert(WEEKLY)),  # the guard is age, not the drop
                ],
            }
        ],
        alerts=[WEEKLY],
    )


def test_stuck_point_is_not_compared_as_a_weekly_drop(promtool: str, tmp_path: Path) -> None:
    """A newest point that stops moving is stale, not a drop against a week-old point."""
    # The point of day 0 (value 80 000) is held from day 1 to day 9.
    held = [(-DAY, 100_000)] * SAMPLES_PER_DAY + [(0, 80_000)] * (9 * SAMPLES_PER_DAY)
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": held_points("mau", held),
                "promql_expr_test": [
                    {
                        "expr": "workspace_app:braze_monthly_active_users:ratio_7d",
                        "eval_time": "8d2h",
                        "exp_samples": [],
                    }
                ],
            }
        ],
        alerts=[WEEKLY],
    )


# --- every daily alert: rhythm, change, restart, replicas -------------------------------------

# Weekly rhythm (by promtool's weekday, day 0 a Thursday) and day-to-day noise of each
# daily kind, for the synthetic series below.
DAILY_RHYTHMS: dict[str, tuple[tuple[float, ...], float]] = {
    "mau": ((1.0, 1.002, 1.003, 1.002, 1.0, 0.998, 0.997), 0.002),
    "dau": ((1.0, 1.03, 0.8, 0.76, 0.98, 1.04, 1.05), 0.03),
    "new_users": ((1.0, 1.1, 1.2, 1.15, 0.9, 0.95, 1.05), 0.06),
    "uninstalls": ((1.0, 0.9, 1.3, 1.4, 1.2, 1.0, 1.1), 0.12),
}


def daily_rhythm(kind: str, base: float, days: int, seed: str) -> list[float]:
    weekly, noise = DAILY_RHYTHMS[kind]
    rng = random.Random(f"{kind}/{seed}")
    return [round(base * weekly[day % 7] * (1 + rng.uniform(-noise, noise))) for day in range(days)]


@dataclass(frozen=True)
class DailyChange:
    """A daily alert, and a change of its kind that must fire it: every point from day 14
    on (held from 14d00:00) multiplied by `factor`; `ratio` is the per-app ratio it uses."""

    alert: str
    kind: str
    base: float
    factor: float
    ratio: str


DAILY_CHANGES = [
    DailyChange(WEEKLY, "mau", 100_000, 0.88, "workspace_app:braze_monthly_active_users:ratio_7d"),
    DailyChange(DAILY, "mau", 100_000, 0.94, "workspace_app:braze_monthly_active_users:ratio_1d"),
    DailyChange(DAU_DROP, "dau", 20_000, 0.7, "workspace_app:braze_daily_active_users:ratio_7d"),
    DailyChange(
        NEW_USERS_DROP, "new_users", 1_500, 0.55, "workspace_app:braze_daily_new_users:ratio_7d"
    ),
    DailyChange(
        UNINSTALLS_SPIKE, "uninstalls", 40, 3, "workspace_app:braze_daily_uninstalls:ratio_7d"
    ),
]
CHANGE_DAY = 14


@pytest.mark.parametrize("case", DAILY_CHANGES, ids=[case.alert for case in DAILY_CHANGES])
def test_daily_alert_fires_on_a_change_through_a_restart_and_once_for_two_replicas(
    promtool: str, tmp_path: Path, case: DailyChange
) -> None:
    """Over 16 days of a weekly rhythm with noise, one series per app: `tvos` keeps the
    rhythm and never fires; from day 14 the others change, each served differently:
    `ios` by one pod, `android` by a pod replaced 3 days before the change, `web` by two
    replicas, and the whole workspace. Each fires within the hour after `for:`, once, and
    the restart leaves no evaluation without a ratio."""
    days = CHANGE_DAY + 2
    restart = at_sample((CHANGE_DAY - 3) * DAY + 7 * HOUR)

    def points(app: str | None) -> list[float]:
        rhythm = daily_rhythm(case.kind, case.base, days, app or "workspace")
        if app == "tvos":
            return rhythm
        return [v * (case.factor if day >= CHANGE_DAY else 1) for day, v in enumerate(rhythm)]

    series = [
        *daily_points(points("tvos"), app="tvos", kind=case.kind),
        *daily_points(points("ios"), app="ios", kind=case.kind),
        *daily_points(points("android"), app="android", kind=case.kind, serving=restarted(restart)),
        *daily_points(points("web"), app="web", kind=case.kind, serving=TWO_REPLICAS),
        *daily_points(points(None), app=None, kind=case.kind, serving=restarted(restart)),
    ]
    changed = [drop_alert(case.alert, app=app) for app in ("ios", "android", "web", None)]
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": series,
                "promql_expr_test": [
                    never_fired("13d23h", "13d23h", case.alert),
                    firing_at("14d"),  # pending: `for: 1h`
                    firing_at("14d1h", *changed),
                    never_fired(f"{days - 1}d23h", f"{days}d", case.alert, app="tvos"),
                    {  # one ratio at each hourly evaluation of the last 7 days
                        "expr": f'count_over_time({case.ratio}{{app="android"}}[7d])',
                        "eval_time": f"{days - 1}d23h",
                        "exp_samples": [
                            {"labels": selector("", place("production", "android")), "value": 169}
                        ],
                    },
                ],
            }
        ],
        alerts=[case.alert],
    )


def test_uninstalls_spike_needs_the_minimum_count(promtool: str, tmp_path: Path) -> None:
    """Three times a tiny count, or anything after a week-ago 0, stays below 20 uninstalls;
    the same multiple of a real count fires, and so does reaching 20 after a week-ago 0."""
    flat_then = [5] * CHANGE_DAY
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    *daily_points([*flat_then, 15], app="tiny", kind="uninstalls"),
                    *daily_points([0] * CHANGE_DAY + [12], app="new", kind="uninstalls"),
                    *daily_points([0] * CHANGE_DAY + [20], app="big", kind="uninstalls"),
                    *daily_points([10] * CHANGE_DAY + [20], app="ios", kind="uninstalls"),
                    *daily_points([10] * CHANGE_DAY + [19], app="web", kind="uninstalls"),
                ],
                "promql_expr_test": [
                    firing_at(
                        "14d1h",
                        drop_alert(UNINSTALLS_SPIKE, app="big"),
                        drop_alert(UNINSTALLS_SPIKE, app="ios"),
                    ),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "14d1h",
                        "alertname": UNINSTALLS_SPIKE,
                        "exp_alerts": [
                            {
                                "exp_labels": drop_alert(UNINSTALLS_SPIKE, app="big"),
                                "exp_annotations": {
                                    "summary": "Uninstalls of app big in workspace production "
                                    "spiked against the same day a week earlier",
                                    "description": "Uninstalls of app big in workspace "
                                    "production were, on the newest day, +Inf times those of "
                                    "the same weekday a week earlier; the alert fires at 2 "
                                    "times or more, from 20 uninstalls a day.",
                                    "runbook_url": runbook_url(UNINSTALLS_SPIKE),
                                },
                            },
                            {
                                "exp_labels": drop_alert(UNINSTALLS_SPIKE, app="ios"),
                                "exp_annotations": {
                                    "summary": "Uninstalls of app ios in workspace production "
                                    "spiked against the same day a week earlier",
                                    "description": "Uninstalls of app ios in workspace "
                                    "production were, on the newest day, 2.0 times those of "
                                    "the same weekday a week earlier; the alert fires at 2 "
                                    "times or more, from 20 uninstalls a day.",
                                    "runbook_url": runbook_url(UNINSTALLS_SPIKE),
                                },
                            },
                        ],
                    }
                ],
            }
        ],
        alerts=[UNINSTALLS_SPIKE],
    )


def test_dau_and_new_users_drop_alerts_show_the_ratio_and_the_threshold(
    promtool: str, tmp_path: Path
) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    *daily_points([20_000] * 8 + [16_000], app=None, kind="dau"),
                    *daily_points([1_000] * 8 + [700], kind="new_users"),
                    *daily_points([1_000] * 8 + [701], app="web", kind="new_users"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "8d1h",
                        "alertname": DAU_DROP,
                        "exp_alerts": [
                            {
                                "exp_labels": drop_alert(DAU_DROP, app=None),
                                "exp_annotations": {
                                    "summary": "DAU of workspace production dropped against "
                                    "the same day a week earlier",
                                    "description": "Daily active users of the whole workspace "
                                    "production were, on the newest day, at 80% of the same "
                                    "weekday a week earlier; the alert fires at a drop of 20% "
                                    "or more.",
                                    "runbook_url": runbook_url(DAU_DROP),
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "8d1h",
                        "alertname": NEW_USERS_DROP,
                        "exp_alerts": [
                            {
                                "exp_labels": drop_alert(NEW_USERS_DROP),
                                "exp_annotations": {
                                    "summary": "New users of app ios in workspace production "
                                    "dropped against the same day a week earlier",
                                    "description": "New users of app ios in workspace "
                                    "production were, on the newest day, at 70% of the same "
                                    "weekday a week earlier; the alert fires at a drop of 30% "
                                    "or more.",
                                    "runbook_url": runbook_url(NEW_USERS_DROP),
                                },
                            }
                        ],
                    },
                ],
            }
        ],
        alerts=[DAU_DROP, NEW_USERS_DROP],
    )


# --- hourly sessions ------------------------------------------------------------------------

# Share of an average hour's sessions by hour of day: night about 0.25, evening peak 1.8,
# and no step between neighbouring hours over 35 %.
DAILY_CURVE = (
    0.6, 0.45, 0.34, 0.27, 0.25, 0.28, 0.36, 0.48, 0.64, 0.82, 0.98, 1.08,
    1.16, 1.12, 1.08, 1.1, 1.2, 1.35, 1.55, 1.72, 1.8, 1.6, 1.25, 0.9,
)  # fmt: skip
# Weekly rhythm by promtool's weekday (day 0 a Thursday): a quieter weekend.
WEEKLY_SESSIONS = (1.0, 1.02, 0.9, 0.86, 0.98, 1.03, 1.04)
COLLAPSED_TO = 0.4
POLL_GRID_OFFSET = 60  # seconds after each interval (exporter.poller.ALIGNMENT_OFFSET_SECONDS)
COLLAPSE_HOURS = 3


def hourly_counts(
    days: int,
    base: float,
    seed: str,
    *,
    collapse_at: int | None = None,
    collapse_hours: int = COLLAPSE_HOURS,
    collapsed_to: float = COLLAPSED_TO,
    noise: float = 0.03,
) -> dict[int, float]:
    """Sessions per hour (by hour index, from hour -2): the curves, noise, and from
    `collapse_at` (seconds) for `collapse_hours` at `collapsed_to` of normal, pro rata in
    the hours it starts and ends in."""
    rng = random.Random(f"sessions/{seed}")
    counts = {}
    for hour in range(-2, days * 24):
        normal = base * DAILY_CURVE[hour % 24] * WEEKLY_SESSIONS[(hour // 24) % 7]
        normal *= 1 + rng.uniform(-noise, noise)
        collapsed = 0.0
        if collapse_at is not None:
            start, end = hour * HOUR, (hour + 1) * HOUR
            overlap = min(end, collapse_at + collapse_hours * HOUR) - max(start, collapse_at)
            collapsed = max(0, overlap) / HOUR
        counts[hour] = normal * (1 - (1 - collapsed_to) * collapsed)
    return counts


def hourly_points(
    counts: Mapping[int, float],
    days: int,
    *,
    workspace: str = "production",
    app: str | None = "ios",
    serving: Sequence[Serving] = ONE_POD,
    last_point: int | None = None,
) -> list[dict[str, str]]:
    """sessions_hourly as the exporter holds it: the point of hour h - 1 from the first
    poll in hour h, at :01 (the exporter polls on a grid of the clock, a minute after each
    interval), before that hour h - 2; never a point after hour `last_point` if given
    (Braze stopped publishing)."""
    held = []
    for sample in range(days * SAMPLES_PER_DAY):
        hour, into = divmod(sample * STEP, HOUR)
        point = hour - 1 if into >= POLL_GRID_OFFSET else hour - 2
        if last_point is not None:
            point = min(point, last_point)
        held.append((point * HOUR, counts[point]))
    return held_points("sessions_hourly", held, workspace, app, serving)


def test_the_hourly_test_data_has_the_rhythm_the_alert_must_stand() -> None:
    assert min(DAILY_CURVE) == 0.25
    assert max(DAILY_CURVE) == 1.8
    steps = [b / a for a, b in zip(DAILY_CURVE, DAILY_CURVE[1:] + DAILY_CURVE[:1], strict=True)]
    assert all(0.65 <= step <= 1.35 for step in steps)


HOURLY_COLLAPSES = {  # app -> (start of the collapse, to what fraction), at other minutes
    "at00": (8 * DAY + 14 * HOUR, COLLAPSED_TO),
    "at20": (9 * DAY + 15 * HOUR + 20 * MINUTE, COLLAPSED_TO),
    "at55": (10 * DAY + 16 * HOUR + 55 * MINUTE, COLLAPSED_TO),
    # Just under half, just too late in the hour for that hour to show it: the worst case.
    "under_half_at13": (8 * DAY + 20 * HOUR + 13 * MINUTE, 0.49),
    "replicas": (11 * DAY + 17 * HOUR + 20 * MINUTE, COLLAPSED_TO),  # two replicas serve it
    "restarted": (12 * DAY + 18 * HOUR + 20 * MINUTE, COLLAPSED_TO),  # pod replaced 3 days ago
}


def test_hourly_sessions_drop_fires_within_two_hours_and_never_on_the_rhythm(
    promtool: str, tmp_path: Path
) -> None:
    """Two weeks of hourly sessions with a daily curve and a weekly rhythm, the held hour
    changing a minute after each hour (the poll grid). `steady` never fires. Each app in
    HOURLY_COLLAPSES collapses (to 40 %, or to just under half) for 3 hours at another
    minute of an hour; the alert is quiet until then and fires by 2 hours after it, once,
    through a restart and for two replicas. `small` (night hours under 100 sessions)
    collapses by night and does not fire; the whole workspace `staging` shows the ratio and
    threshold."""
    days = 14
    series = hourly_points(hourly_counts(days, 2_000, "steady"), days, app="steady")
    checks = [never_fired(duration(days * DAY), duration(days * DAY), HOURLY, app="steady")]
    for app in ("steady", "restarted"):
        checks.append(
            {  # a ratio at every evaluation of the second week: at the turn of each hour
                # too, and through the restart
                "expr": "count_over_time("
                f'workspace_app:braze_hourly_sessions:ratio_7d{{app="{app}"}}[6d])',
                "eval_time": duration(days * DAY),
                "exp_samples": [
                    {"labels": selector("", place("production", app)), "value": 6 * 288 + 1}
                ],
            }
        )
    for app, (collapse, collapsed_to) in HOURLY_COLLAPSES.items():
        serving: Sequence[Serving] = ONE_POD
        if app == "replicas":
            serving = TWO_REPLICAS
        elif app == "restarted":
            serving = restarted(at_sample(collapse - 3 * DAY))
        counts = hourly_counts(days, 2_000, app, collapse_at=collapse, collapsed_to=collapsed_to)
        series += hourly_points(counts, days, app=app, serving=serving)
        before = duration(collapse - 5 * MINUTE)
        checks += [
            never_fired(before, before, HOURLY, app=app),
            alerts_at(
                duration(collapse + 2 * HOUR),
                drop_alert(HOURLY, app=app),
                where={"alertname": HOURLY, "app": app},
            ),
        ]
    # From midnight for 6 hours, which had 31 to 75 sessions a week earlier.
    small = hourly_counts(days, 120, "small", collapse_at=13 * DAY, collapse_hours=6)
    series += hourly_points(small, days, app="small")
    checks += [
        never_fired(duration(days * DAY), duration(days * DAY), HOURLY, app="small"),
        {  # the ratio fell: it is the minimum count that keeps the alert quiet
            "expr": 'count(workspace_app:braze_hourly_sessions:ratio_7d{app="small"} <= 0.5)',
            "eval_time": "13d4h",
            "exp_samples": [{"labels": "{}", "value": 1}],
        },
    ]
    staging_collapse = 13 * DAY + 12 * HOUR
    staging = hourly_counts(days, 5_000, "staging", collapse_at=staging_collapse, noise=0)
    series += hourly_points(staging, days, workspace="staging", app=None)
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": series,
                "promql_expr_test": checks,
                "alert_rule_test": [
                    {
                        "eval_time": "13d14h",
                        "alertname": HOURLY,
                        "exp_alerts": [
                            {
                                "exp_labels": drop_alert(HOURLY, workspace="staging", app=None),
                                "exp_annotations": {
                                    "summary": "Hourly sessions of workspace staging dropped "
                                    "against the same hour a week earlier",
                                    "description": "Sessions of the whole workspace staging in "
                                    "the newest complete hour were at 40% of the same hour a "
                                    "week earlier; the alert fires at a drop of 40% or more, "
                                    "where the week-ago hour had at least 100 sessions.",
                                    "runbook_url": runbook_url(HOURLY),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
        evaluation_interval="5m",
        alerts=[HOURLY],
    )


# --- staleness, polls, API answers, the target ------------------------------------------------


def test_stale_point_fires_after_36_hours_or_3_for_hourly_through_restarts(
    promtool: str, tmp_path: Path
) -> None:
    """The mau point of day 0 (it ends at 24h) stays the newest: 36 hours later, at 60h,
    plus `for: 15m`, it is stale, whether one pod serves it, a pod replaced before and
    again while the alert fires (`android`), or two replicas (`web`). The sessions_hourly
    point of hour 38 (it ends at 39h) is stale 3 hours later. Moving points never are."""
    days = 3
    stuck_day = [(0, 80_000.0)] * (days * SAMPLES_PER_DAY)
    hourly = hourly_counts(days, 2_000, "stale")
    restarts = restarted(at_sample(40 * HOUR), at_sample(61 * HOUR))
    stale = {"alertname": STALE, "severity": "warning", "workspace": "production"}
    daily = [stale | {"app": app, "kpi": "mau"} for app in ("android", "ios", "web")]
    hourly_stale = stale | {"app": "ios", "kpi": "sessions_hourly"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    *held_points("mau", stuck_day, app="ios"),
                    *held_points("mau", stuck_day, app="android", serving=restarts),
                    *held_points("mau", stuck_day, app="web", serving=TWO_REPLICAS),
                    *daily_points([50_000] * days, app="tvos", kind="dau"),
                    *hourly_points(hourly, days, app="ios", last_point=38),
                    *hourly_points(hourly, days, app="web"),
                ],
                "promql_expr_test": [
                    never_fired("42h", "42h", STALE),
                    firing_at("42h15m"),  # pending from 42h05m
                    firing_at("42h20m", hourly_stale),
                    never_fired("60h", "60h", STALE, kpi="mau"),
                    firing_at("60h15m", hourly_stale),  # pending from 60h05m
                    firing_at("60h20m", *daily, hourly_stale),
                    {  # firing all through the restart at 61h: every evaluation of an hour
                        "expr": f'count_over_time(ALERTS{{alertname="{STALE}", '
                        'alertstate="firing", app="android"}[59m])',
                        "eval_time": "62h",
                        "exp_samples": [
                            {
                                "labels": selector("", daily[0] | {"alertstate": "firing"}),
                                "value": 12,
                            }
                        ],
                    },
                    never_fired(f"{days}d", f"{days}d", STALE, app="tvos"),
                    never_fired(f"{days}d", f"{days}d", STALE, app="web", kpi="sessions_hourly"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "61h",
                        "alertname": STALE,
                        "exp_alerts": [
                            *(
                                {
                                    "exp_labels": alert,
                                    "exp_annotations": {
                                        "summary": f"Braze mau data of app {alert['app']} in "
                                        "workspace production is stale",
                                        "description": f"The newest mau point of app "
                                        f"{alert['app']} in workspace production covers a day "
                                        "that ended 37.0 hours ago; the alert fires after 36 "
                                        "hours.",
                                        "runbook_url": runbook_url(STALE),
                                    },
                                }
                                for alert in daily
                            ),
                            {
                                "exp_labels": hourly_stale,
                                "exp_annotations": {
                                    "summary": "Braze sessions_hourly data of app ios in "
                                    "workspace production is stale",
                                    "description": "The newest sessions_hourly point of app "
                                    "ios in workspace production covers an hour that ended "
                                    "22.0 hours ago; the alert fires after 3 hours.",
                                    "runbook_url": runbook_url(STALE),
                                },
                            },
                        ],
                    }
                ],
            }
        ],
        evaluation_interval="5m",
        alerts=[STALE],
    )


def test_failing_polls_fire_after_an_hour_through_a_restart_and_once_for_replicas(
    promtool: str, tmp_path: Path
) -> None:
    """Polls fail from 30m on: `for: 1h` ends at 1h30m, also for the series whose pod was
    replaced at 50m (the new pod fails too) and once for two failing replicas. One replica
    failing while the other succeeds is not an alert: the data is fresh."""
    failing = [1.0] * 6 + [0.0] * 20

    def success(app: str, samples: Sequence[float | None], **how: Any) -> list[dict[str, str]]:
        labels = {"workspace": "production", "app": app, "kpi": "mau"}
        return scraped("braze_last_poll_success", labels, samples, **how)

    polls = {"alertname": POLLS, "severity": "warning", "workspace": "production", "kpi": "mau"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    *success("ios", failing),
                    *success("android", failing, serving=restarted(at_sample(50 * MINUTE))),
                    *success("web", failing, serving=TWO_REPLICAS),
                    *success("tvos", failing, serving=[Serving(POD)]),
                    *success("tvos", [1.0] * 26, serving=[Serving(REPLICA)]),
                    *success("watch", [1.0] * 26),
                ],
                "promql_expr_test": [
                    firing_at("1h25m"),
                    firing_at(
                        "1h30m", *(polls | {"app": app} for app in ("android", "ios", "web"))
                    ),
                    never_fired("2h", "2h", POLLS, app="tvos"),
                    never_fired("2h", "2h", POLLS, app="watch"),
                ],
            }
        ],
        evaluation_interval="5m",
        alerts=[POLLS],
    )


def requests_counter(
    code: str,
    values: str | Sequence[float | None],
    workspace: str = "production",
    kpi: str = "mau",
    serving: Sequence[Serving] = ONE_POD,
) -> list[dict[str, str]]:
    labels = {"workspace": workspace, "kpi": kpi, "code": code}
    if isinstance(values, str):  # promtool's notation, one target
        return [{"series": selector("braze_api_requests_total", POD | labels), "values": values}]
    return scraped("braze_api_requests_total", labels, values, serving)


def test_rejected_key_fires_critical_at_once_and_names_the_permission(
    promtool: str, tmp_path: Path
) -> None:
    rejected = {"alertname": REJECTED, "severity": "critical"}
    production = rejected | {"workspace": "production", "kpi": "mau", "code": "401"}
    # Two replicas answered 401 for sessions_hourly, one more each per poll from 30m on.
    asia = rejected | {"workspace": "asia", "kpi": "sessions_hourly", "code": "401"}
    asia_counter = [None] * 6 + [1.0] * 3 + [2.0] * 3 + [3.0] * 3
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    # Born at its first 401 at 1h (`_x12`: 12 missing), then one more per poll.
                    *requests_counter("401", "_x12 1 1 1 2 2 2 3 3 3"),
                    *requests_counter("200", "1+1x20", workspace="staging"),
                    *requests_counter("401", asia_counter, "asia", "sessions_hourly", TWO_REPLICAS),
                ],
                "promql_expr_test": [
                    alerts_at("55m", where={"workspace": "production"}),
                    alerts_at("1h", production, where={"workspace": "production"}),
                    alerts_at("1h40m", production, where={"workspace": "production"}),
                    alerts_at("30m", asia, where={"workspace": "asia"}),  # one, for 2 replicas
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1h",
                        "alertname": REJECTED,
                        "exp_alerts": [
                            {
                                "exp_labels": production,
                                "exp_annotations": {
                                    "summary": "Braze rejects the API key of workspace "
                                    "production for mau (HTTP 401)",
                                    "description": "Braze answered HTTP 401 to 1 requests for "
                                    "mau of workspace production in the last 15 minutes. Check "
                                    "that the key is valid and has the kpi.mau.data_series "
                                    "permission (see the README's table of kinds), and that "
                                    "the workspace's instance (or url) in the exporter's "
                                    "config is the one the key belongs to.",
                                    "runbook_url": runbook_url(REJECTED),
                                },
                            },
                            {
                                "exp_labels": asia,
                                "exp_annotations": {
                                    "summary": "Braze rejects the API key of workspace asia "
                                    "for sessions_hourly (HTTP 401)",
                                    "description": "Braze answered HTTP 401 to 2 requests for "
                                    "sessions_hourly of workspace asia in the last 15 minutes. "
                                    "Check that the key is valid and has the "
                                    "sessions.data_series permission (see the README's table "
                                    "of kinds), and that the workspace's instance (or url) in "
                                    "the exporter's config is the one the key belongs to.",
                                    "runbook_url": runbook_url(REJECTED),
                                },
                            },
                        ],
                    }
                ],
            },
            {
                # Rejections that stopped long ago do not keep it firing.
                "interval": "5m",
                "input_series": requests_counter("403", "3x30"),
                "promql_expr_test": [firing_at("1h"), firing_at("2h")],
            },
            {
                # A 403 for dau at every poll (each 15 minutes) from 20m; the pod is replaced
                # at 1h and the new one's counter is born at its first 403, at 1h05m: one
                # alert, firing all along.
                "interval": "5m",
                "input_series": requests_counter(
                    "403",
                    [None] * 4
                    + [1.0] * 3
                    + [2.0] * 3
                    + [3.0] * 2
                    + [None]
                    + [1.0] * 3
                    + [2.0] * 3
                    + [3.0] * 2,
                    kpi="dau",
                    serving=restarted(12),
                ),
                "promql_expr_test": [
                    {
                        "expr": f'count_over_time(ALERTS{{alertname="{REJECTED}"}}[1h40m])',
                        "eval_time": "1h40m",
                        "exp_samples": [
                            {
                                "labels": selector(
                                    "",
                                    rejected
                                    | {"alertstate": "firing", "kpi": "dau"}
                                    | {"workspace": "production", "code": "403"},
                                ),
                                "value": 17,  # 20m to 1h40m, every 5 minutes
                            }
                        ],
                    }
                ],
            },
        ],
        evaluation_interval="5m",
        alerts=[REJECTED],
    )


def test_rate_limited_workspace_fires_through_a_restart_and_once_for_replicas(
    promtool: str, tmp_path: Path
) -> None:
    limited = {"alertname": LIMITED, "severity": "warning"}
    one_429 = [None] * 5 + [1.0] * 19
    # A 429 at every poll from 25m; the pod is replaced at 45m, the new one's first 429 at 50m.
    europe = [None] * 5 + [1.0] * 3 + [2.0] * 2 + [None] + [1.0] * 3 + [2.0] * 3
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    *requests_counter("200", "10+10x24"),
                    *requests_counter("429", one_429),
                    *requests_counter("429", europe, "europe", serving=restarted(9)),
                    *requests_counter("429", one_429, "asia", serving=TWO_REPLICAS),
                ],
                "promql_expr_test": [
                    firing_at("20m"),
                    alerts_at(
                        "30m",
                        limited | {"workspace": "production"},
                        where={"workspace": "production"},
                    ),
                    # The one 429 is 55m old: 15m window + 15m keep_firing_for.
                    alerts_at("1h20m", where={"workspace": "production"}),
                    alerts_at("25m", limited | {"workspace": "asia"}, where={"workspace": "asia"}),
                    {  # one alert, firing all through the restart
                        "expr": f'count_over_time(ALERTS{{alertname="{LIMITED}", '
                        'workspace="europe"}[45m])',
                        "eval_time": "1h10m",
                        "exp_samples": [
                            {
                                "labels": selector(
                                    "", limited | {"alertstate": "firing", "workspace": "europe"}
                                ),
                                "value": 10,
                            }
                        ],
                    },
                ],
            },
            {
                # No 429, but the exporter holds a workspace back: its window is used up.
                "interval": "5m",
                "input_series": [
                    *scraped(
                        "braze_api_rate_limit_paused",
                        {"workspace": "latam"},
                        [0] * 6 + [1] * 6 + [0] * 12,
                    ),
                    *scraped("braze_api_rate_limit_paused", {"workspace": "calm"}, [0] * 24),
                ],
                "promql_expr_test": [
                    firing_at("25m"),
                    firing_at("30m", limited | {"workspace": "latam"}),
                    never_fired("2h", "2h", LIMITED, workspace="calm"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "40m",
                        "alertname": LIMITED,
                        "exp_alerts": [
                            {
                                "exp_labels": limited | {"workspace": "latam"},
                                "exp_annotations": {
                                    "summary": "Braze rate-limits workspace latam",
                                    "description": "The exporter holds back the requests of "
                                    "workspace latam: its Braze rate-limit window is used up. "
                                    "The exporter pauses the workspace until the limit resets. "
                                    "The rate limit is shared with everything else that uses "
                                    "the workspace's API keys.",
                                    "runbook_url": runbook_url(LIMITED),
                                },
                            }
                        ],
                    }
                ],
            },
        ],
        evaluation_interval="5m",
        alerts=[LIMITED],
    )


def test_exporter_down_fires_after_five_minutes_per_target(promtool: str, tmp_path: Path) -> None:
    """Unlike the others, this alert is per target: it names the pod that is down. Its
    replica stays up, and a replaced pod (its target gone, not down) does not fire it."""
    replaced = restarted(6, pods=PODS[2:])
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    *scraped("up", {}, [1] * 5 + [0] * 10),
                    *scraped("up", {}, [1] * 15, serving=[Serving(REPLICA)]),
                    *scraped("up", {}, [1] * 15, serving=replaced),
                ],
                "promql_expr_test": [
                    firing_at("8m"),
                    firing_at("11m", {"alertname": DOWN, "severity": "warning"} | POD),
                ],
            }
        ],
        evaluation_interval="5m",
        alerts=[DOWN],
    )


# --- the whole file on the simulator's data ---------------------------------------------------

SIMULATED_START = datetime.datetime(2026, 10, 17, tzinfo=datetime.timezone.utc)
SIMULATED_DAYS = 21  # to 7 November: both autumn DST changes are in the week-ago comparisons


def simulated_points(
    simulator: BrazeSimulator, api_key: str, kind: str, app_id: str | None, zone: ZoneInfo
) -> list[tuple[float, float]]:
    """(point start, value) per sample, as the exporter would hold them, its polls 5 or 10
    minutes after each hour; point starts on promtool's clock (SIMULATED_START is 0)."""
    start = SIMULATED_START.timestamp()
    rng = random.Random(f"polls/{api_key}/{kind}/{app_id}")
    delays = [rng.choice((5, 10)) * MINUTE for _ in range(SIMULATED_DAYS * 24)]
    cache: dict[float, float] = {}
    held = []
    for sample in range(SIMULATED_DAYS * SAMPLES_PER_DAY):
        hour, into = divmod(sample * STEP, HOUR)
        # The newest poll: this hour's once it ran, else one in the hour before.
        polled = start + hour * HOUR + delays[hour] - (HOUR if into < delays[hour] else 0)
        period: datetime.date | datetime.datetime
        if kind == "sessions_hourly":
            period = datetime.datetime.fromtimestamp((polled // HOUR - 1) * HOUR, zone)
            period_start = period.timestamp()
        else:
            period = datetime.datetime.fromtimestamp(polled, zone).date() - datetime.timedelta(1)
            midnight = datetime.datetime.combine(period, datetime.time(), tzinfo=zone)
            period_start = midnight.timestamp()
        if period_start not in cache:
            cache[period_start] = simulator.expected_value(api_key, kind, app_id, period)
        held.append((period_start - start, cache[period_start]))
    return held


def test_three_weeks_of_simulated_data_fire_no_alert(promtool: str, tmp_path: Path) -> None:
    """Three weeks of the simulator's demo data, every kind, in the workspaces' own time
    zones (New York and Berlin, through both autumn DST changes), evaluated by the whole
    rules file: weekly swing, trend, noise, daily curve and DST fire nothing, and every
    ratio is computed."""
    simulator = BrazeSimulator(DEMO_WORKSPACES)  # only its data model; never started
    series: list[dict[str, str]] = []
    places = 0
    for workspace in DEMO_WORKSPACES:
        zone = ZoneInfo(workspace.time_zone)
        for app in (None, *workspace.apps):
            places += 1
            app_id, app_name = (app.app_id, app.name) if app else (None, None)
            for kind in SUPPORTED_KPIS:
                held = simulated_points(simulator, workspace.api_key, kind, app_id, zone)
                series += held_points(kind, held, workspace.name, app_name)
                labels = place(workspace.name, app_name) | {"kpi": kind}
                series += scraped("braze_last_poll_success", labels, [1] * len(held))
        count = [float(n) for n in range(SIMULATED_DAYS * SAMPLES_PER_DAY)]
        labels = {"workspace": workspace.name, "kpi": "mau", "code": "200"}
        series += scraped("braze_api_requests_total", labels, count)
        series += scraped(
            "braze_api_rate_limit_paused", place(workspace.name, None), [0] * len(count)
        )
    series += scraped("up", {}, [1] * SIMULATED_DAYS * SAMPLES_PER_DAY)
    ratios = [rule["record"] for rule in load_rules() if ":ratio_" in rule.get("record", "")]
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": series,
                "promql_expr_test": [
                    never_fired(f"{SIMULATED_DAYS}d", f"{SIMULATED_DAYS}d", ".+"),
                    {
                        "expr": 'count by (__name__) ({__name__=~".+:ratio_.+"})',
                        "eval_time": f"{SIMULATED_DAYS - 1}d12h",
                        "exp_samples": [
                            {
                                "labels": selector(name, {}),
                                "value": 2 if name.startswith("workspace:") else places - 2,
                            }
                            for name in ratios
                        ],
                    },
                ],
            }
        ],
    )


# --- the rules file itself --------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings
    }


def test_promtool_check_rules_is_clean(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_documented_with_a_runbook_in_the_readme() -> None:
    anchors = github_anchors((REPO / "README.md").read_text())
    alerts = [rule for rule in load_rules() if "alert" in rule]
    assert len(alerts) == 11
    for alert in alerts:
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, alert["alert"]
        assert annotations["runbook_url"] == runbook_url(alert["alert"])
        assert alert["alert"].lower() in anchors, f"README has no section {alert['alert']}"
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_recording_rules_follow_level_metric_operations() -> None:
    records = [rule["record"] for rule in load_rules() if "record" in rule]
    assert records
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", record), record


def test_no_rule_matches_or_aggregates_on_target_labels() -> None:
    """Only BrazeExporterDown, which is about a target, may name one."""
    for rule in load_rules():
        if rule.get("alert") == DOWN:
            continue
        for label in ("job", "instance", "pod", "namespace", "service", "endpoint"):
            assert not re.search(rf"\b{label}\b", rule["expr"]), (rule_id(rule), label)


def test_thresholds_are_constants_the_chart_can_override() -> None:
    thresholds = {
        rule["record"]: rule["expr"]
        for rule in load_rules()
        if ":threshold_" in rule.get("record", "")
    }
    assert thresholds == {
        "braze:monthly_active_users_weekly_drop:threshold_ratio": "vector(0.1)",
        "braze:monthly_active_users_daily_drop:threshold_ratio": "vector(0.05)",
        "braze:daily_active_users_weekly_drop:threshold_ratio": "vector(0.2)",
        "braze:daily_new_users_weekly_drop:threshold_ratio": "vector(0.3)",
        "braze:daily_uninstalls_weekly_spike:threshold_ratio": "vector(2)",
        "braze:daily_uninstalls_spike:threshold_min_count": "vector(20)",
        "braze:hourly_sessions_drop:threshold_ratio": "vector(0.4)",
        "braze:hourly_sessions_drop:threshold_min_count": "vector(100)",
        "braze:kpi_point_stale:threshold_hours": "vector(36)",
        "braze:hourly_kpi_point_stale:threshold_hours": "vector(3)",
    }
