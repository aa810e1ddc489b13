"""The alert and recording rules in monitoring/, unit-tested with `promtool test rules`.

Each scenario is written here as daily MAU points and turned into a promtool test file:
promtool's clock starts at 1970-01-01 00:00 UTC, and during day k the exporter holds the
point of day k - 1 (Braze publishes a day's MAU after it ends).
"""

from __future__ import annotations

import datetime
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart

from exporter.simulator import DEMO_WORKSPACES, BrazeSimulator
from tests.conftest import REPO, RULES_FILE, required_tool

TARGET = {"job": "braze-exporter", "instance": "exporter:9877"}
DAY = 86_400
WEEKLY = "BrazeMonthlyActiveUsersWeeklyDrop"
DAILY = "BrazeMonthlyActiveUsersDailyDrop"


@pytest.fixture(scope="module")
def promtool() -> str:
    return required_tool("promtool", "Debian package prometheus")


def run_promtool_tests(
    promtool: str,
    tmp_path: Path,
    tests: list[dict[str, Any]],
    evaluation_interval: str = "15m",
    rules_file: Path = RULES_FILE,
) -> None:
    """Run promtool's unit tests; 15m evaluations suit MAU (daily points, `for: 1h`)."""
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


def selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in {**TARGET, **labels}.items())
    return f"{name}{{{inner}}}"


def daily_points(
    points: Sequence[float], workspace: str = "production", app: str | None = "ios"
) -> list[dict[str, str]]:
    """The MAU gauge and its point timestamp, scraped every 5m, holding points[k] on day k."""
    place = {"workspace": workspace} | ({"app": app} if app else {})
    metric = "braze_monthly_active_users" if app else "braze_workspace_monthly_active_users"
    per_day = DAY // 300 - 1  # `vxN` is N + 1 samples
    scraped = " ".join(f"{value:g}x{per_day}" for value in points)
    point_days = " ".join(f"{(day - 1) * DAY}x{per_day}" for day in range(len(points)))
    return [
        {"series": selector(metric, place), "values": scraped},
        {
            "series": selector("braze_kpi_point_timestamp_seconds", place | {"kpi": "mau"}),
            "values": point_days,
        },
    ]


def firing_at(eval_time: str, *alerts: dict[str, str]) -> dict[str, Any]:
    """Exactly `alerts` (alertname, severity and series labels) are firing at `eval_time`."""
    return {
        "expr": 'ALERTS{alertstate="firing"}',
        "eval_time": eval_time,
        "exp_samples": [
            {"labels": selector("ALERTS", {"alertstate": "firing", **alert}), "value": 1}
            for alert in alerts
        ],
    }


def never_fired(eval_time: str, window: str, alertnames: str) -> dict[str, Any]:
    """No alert matching the `alertnames` regex was pending or firing in `window`."""
    return {
        "expr": f'max_over_time(ALERTS{{alertname=~"{alertnames}"}}[{window}])',
        "eval_time": eval_time,
        "exp_samples": [],
    }


def drop_alert(name: str, workspace: str = "production", app: str | None = "ios") -> dict[str, str]:
    return {"alertname": name, "severity": "warning", "workspace": workspace} | (
        {"app": app} if app else {}
    )


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
                    firing_at("14d0h30m"),  # 90 %, but not yet for 1h
                    firing_at("14d1h30m", drop_alert(WEEKLY)),
                    firing_at("14d23h", drop_alert(WEEKLY)),
                    firing_at("15d2h"),  # 90 000 against 98 500: 91.4 %
                ],
            }
        ],
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
    run_promtool_tests(promtool, tmp_path, [ten_percent], rules_file=chart_rules)


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
                                "exp_labels": TARGET | drop_alert(WEEKLY),
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
                    never_fired("6d23h", "7d", "BrazeMonthlyActiveUsers.*"),
                    firing_at("7d2h", drop_alert(WEEKLY)),  # the guard is age, not the drop
                ],
            }
        ],
    )


def test_stuck_point_is_not_compared_as_a_weekly_drop(promtool: str, tmp_path: Path) -> None:
    """A newest point that stops moving is stale, not a drop against a week-old point."""
    place = {"workspace": "production", "app": "ios"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    # The point of day 0 (value 80 000) is held from day 1 to day 9.
                    {
                        "series": selector("braze_monthly_active_users", place),
                        "values": "100000x287 80000x2591",
                    },
                    {
                        "series": selector(
                            "braze_kpi_point_timestamp_seconds", place | {"kpi": "mau"}
                        ),
                        "values": f"{-DAY}x287 0x2591",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "workspace_app:braze_monthly_active_users:ratio_7d",
                        "eval_time": "8d2h",
                        "exp_samples": [],
                    }
                ],
            }
        ],
    )


def test_weekly_rhythm_of_simulated_data_fires_nothing(promtool: str, tmp_path: Path) -> None:
    """Four weeks of the simulator's demo data (weekly swing, trend, noise): no drop alert."""
    simulator = BrazeSimulator(DEMO_WORKSPACES)  # only its data model; never started
    first_day = datetime.date(2026, 10, 1)
    days = [first_day + datetime.timedelta(days=offset) for offset in range(28)]
    series: list[dict[str, str]] = []
    for workspace in DEMO_WORKSPACES:
        for app in (None, *workspace.apps):
            app_id = app.app_id if app else None
            points = [simulator.expected_value(workspace.api_key, "mau", app_id, d) for d in days]
            series += daily_points(points, workspace.name, app.name if app else None)
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": series,
                "promql_expr_test": [
                    never_fired("27d23h", "28d", "BrazeMonthlyActiveUsers.*"),
                    {  # the rules did compute ratios: one per app and workspace
                        "expr": "count(workspace_app:braze_monthly_active_users:ratio_7d) "
                        "+ count(workspace:braze_workspace_monthly_active_users:ratio_7d)",
                        "eval_time": "27d12h",
                        "exp_samples": [{"labels": "{}", "value": len(series) // 2}],
                    },
                ],
            }
        ],
    )


def test_stale_point_fires_after_36_hours_and_not_before(promtool: str, tmp_path: Path) -> None:
    stale = {"alertname": "BrazeKpiDataStale", "severity": "warning"}
    labels = {"workspace": "production", "app": "ios", "kpi": "mau"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                # The point of day 0 ends at 24h; 36 hours later is 60h, plus `for: 15m`.
                "interval": "5m",
                "input_series": [
                    {
                        "series": selector("braze_kpi_point_timestamp_seconds", labels),
                        "values": "0x900",
                    }
                ],
                "promql_expr_test": [
                    never_fired("60h", "60h", "BrazeKpiDataStale"),
                    firing_at("60h10m"),
                    firing_at("60h25m", stale | labels),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "61h",
                        "alertname": "BrazeKpiDataStale",
                        "exp_alerts": [
                            {
                                "exp_labels": TARGET | stale | labels,
                                "exp_annotations": {
                                    "summary": "Braze mau data of app ios in workspace "
                                    "production is stale",
                                    "description": "The newest mau point of app ios in "
                                    "workspace production covers a day that ended 37.0 hours "
                                    "ago; the alert fires after 36 hours.",
                                    "runbook_url": runbook_url("BrazeKpiDataStale"),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
        evaluation_interval="5m",
    )


def requests_counter(code: str, values: str, workspace: str = "production") -> dict[str, str]:
    labels = {"workspace": workspace, "kpi": "mau", "code": code}
    return {"series": selector("braze_api_requests_total", labels), "values": values}


def test_rejected_key_fires_critical_at_once(promtool: str, tmp_path: Path) -> None:
    rejected = {"alertname": "BrazeApiKeyRejected", "severity": "critical"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    # Born at its first 401 at 1h (`_x12`: 12 missing), then one more per poll.
                    requests_counter("401", "_x12 1 1 1 2 2 2 3 3 3"),
                    requests_counter("200", "1+1x20", workspace="staging"),
                ],
                "promql_expr_test": [
                    firing_at("55m"),
                    firing_at("1h", rejected | {"workspace": "production", "code": "401"}),
                    firing_at("1h40m", rejected | {"workspace": "production", "code": "401"}),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1h",
                        "alertname": "BrazeApiKeyRejected",
                        "exp_alerts": [
                            {
                                "exp_labels": TARGET
                                | rejected
                                | {"workspace": "production", "code": "401"},
                                "exp_annotations": {
                                    "summary": "Braze rejects the API key of workspace "
                                    "production (HTTP 401)",
                                    "description": "Braze answered HTTP 401 to 1 requests for "
                                    "workspace production in the last 15 minutes. Check that "
                                    "the key is valid and has the kpi.mau.data_series "
                                    "permission, and that the workspace's instance (or url) in "
                                    "the exporter's config is the one the key belongs to.",
                                    "runbook_url": runbook_url("BrazeApiKeyRejected"),
                                },
                            }
                        ],
                    }
                ],
            },
            {
                # Rejections that stopped long ago do not keep it firing.
                "interval": "5m",
                "input_series": [requests_counter("403", "3x30")],
                "promql_expr_test": [firing_at("1h"), firing_at("2h")],
            },
        ],
        evaluation_interval="5m",
    )


def test_rate_limited_workspace_fires(promtool: str, tmp_path: Path) -> None:
    limited = {"alertname": "BrazeRateLimited", "severity": "warning", "workspace": "production"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    requests_counter("200", "10+10x24"),
                    requests_counter("429", "_x5 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
                ],
                "promql_expr_test": [
                    firing_at("20m"),
                    firing_at("30m", limited),
                    firing_at("1h20m"),  # the one 429 is 55m old: 15m window + 15m keep_firing_for
                ],
            }
        ],
        evaluation_interval="5m",
    )


def test_failing_polls_fire_after_an_hour(promtool: str, tmp_path: Path) -> None:
    labels = {"workspace": "production", "app": "ios", "kpi": "mau"}
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "5m",
                "input_series": [
                    {"series": selector("braze_last_poll_success", labels), "values": "1x5 0x20"},
                ],
                "promql_expr_test": [
                    firing_at("1h20m"),
                    firing_at(
                        "1h40m", {"alertname": "BrazePollsFailing", "severity": "warning"} | labels
                    ),
                ],
            }
        ],
        evaluation_interval="5m",
    )


def test_exporter_down_fires_after_five_minutes(promtool: str, tmp_path: Path) -> None:
    run_promtool_tests(
        promtool,
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [{"series": selector("up", {}), "values": "1x4 0x10"}],
                "promql_expr_test": [
                    firing_at("8m"),
                    firing_at("11m", {"alertname": "BrazeExporterDown", "severity": "warning"}),
                ],
            }
        ],
        evaluation_interval="5m",
    )


# --- The rules file itself -----------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def runbook_url(alertname: str) -> str:
    return (
        "https://github.com/braze-exporter/braze-exporter/blob/main/README.md#" + alertname.lower()
    )


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
    assert len(alerts) == 7
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


def test_thresholds_are_constants_the_chart_can_override() -> None:
    thresholds = {
        rule["record"]: rule["expr"]
        for rule in load_rules()
        if rule.get("record", "").endswith(("threshold_ratio", "threshold_hours"))
    }
    assert thresholds == {
        "braze:monthly_active_users_weekly_drop:threshold_ratio": "vector(0.1)",
        "braze:monthly_active_users_daily_drop:threshold_ratio": "vector(0.05)",
        "braze:kpi_point_stale:threshold_hours": "vector(36)",
    }
