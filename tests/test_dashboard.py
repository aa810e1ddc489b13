"""The Grafana dashboard in monitoring/: its structure. Its queries run in test_prometheus_e2e."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import DASHBOARD_FILE

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Row title -> the exporter's metrics its panels show, each with a week-ago overlay.
SIGNALS = {
    "Monthly active users": (
        "braze_monthly_active_users",
        "braze_workspace_monthly_active_users",
    ),
    "Daily active users": ("braze_daily_active_users", "braze_workspace_daily_active_users"),
    "New users": ("braze_daily_new_users", "braze_workspace_daily_new_users"),
    "Uninstalls": ("braze_daily_uninstalls", "braze_workspace_daily_uninstalls"),
    "Sessions": (
        "braze_daily_sessions",
        "braze_workspace_daily_sessions",
        "braze_hourly_sessions",
        "braze_workspace_hourly_sessions",
    ),
}

# A whole query under one aggregation, optionally negated or scaled by a constant.
AGGREGATED = re.compile(
    r"-?(?:sum|min|max)(?: by \((?P<by>[\w, ]+)\) )?\((?P<inner>.+)\)(?: [-*] \d+)?"
)
# Labels that the exporter (or a recording rule) sets; any other label comes from the target.
SERIES_LABELS = {"workspace", "app", "kpi", "code"}
# Series without any of those labels: aggregating them needs no `by`.
UNLABELLED = {
    "braze_poll_cycle_duration_seconds",
    "braze:monthly_active_users_weekly_drop:threshold_ratio",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels listed after that row, up to the next one."""
    sections: dict[str, list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            sections[panel["title"]] = []
        else:
            assert sections, f"{panel['title']!r} comes before the first row"
            list(sections.values())[-1].append(panel)
    return sections


def graphs(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_identity_is_stable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "braze-exporter-kpis"
    assert dashboard["title"] == "Braze KPIs"
    assert {"braze", "braze-exporter"} <= set(dashboard["tags"])
    assert "id" not in dashboard  # Grafana assigns it; a fixed one clashes on import


def test_variables_are_datasource_workspace_and_app(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "workspace", "app"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("workspace", "app"):
        variable = variables[name]
        assert (variable["type"], variable["multi"], variable["includeAll"]) == (
            "query",
            True,
            True,
        )
        assert variable["allValue"] == ".*"  # also matches whole-workspace series (no app)
        assert variable["datasource"] == DATASOURCE
    assert "$workspace" in variables["app"]["query"]["query"]  # apps of the chosen workspaces


def test_panel_ids_are_unique_and_every_panel_uses_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) == 25
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
    for panel in graphs(dashboard):
        assert panel["description"].strip(), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_no_datasource_uid_is_hard_coded() -> None:
    text = DASHBOARD_FILE.read_text()
    uids = {line.split(":", 1)[1].strip(' ",') for line in text.splitlines() if '"uid"' in line}
    assert uids == {"${datasource}", "braze-exporter-kpis"}


def test_one_row_per_signal_then_the_exporter_row(dashboard: dict[str, Any]) -> None:
    assert list(rows(dashboard)) == [*SIGNALS, "Exporter"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            # Open rows hold no panels of their own: theirs follow them in dashboard["panels"].
            assert (panel["collapsed"], panel["panels"]) == (False, []), panel["title"]
            assert "targets" not in panel, panel["title"]


def test_rows_hold_these_panels(dashboard: dict[str, Any]) -> None:
    titles = {row: [panel["title"] for panel in panels] for row, panels in rows(dashboard).items()}
    assert titles == {
        "Monthly active users": [
            "Monthly active users per app",
            "Monthly active users per workspace",
            "MAU change vs 7 days ago",
        ],
        "Daily active users": ["Daily active users per app", "Daily active users per workspace"],
        "New users": ["New users per app", "New users per workspace"],
        "Uninstalls": ["Uninstalls per app", "Uninstalls per workspace"],
        "Sessions": [
            "Daily sessions per app",
            "Daily sessions per workspace",
            "Hourly sessions per app",
            "Hourly sessions per workspace",
        ],
        "Exporter": [
            "Poll success",
            "Newest data point age",
            "Braze API requests by status code",
            "Rate-limit headroom",
            "Rate-limit paused",
            "Poll cycle duration",
        ],
    }


@pytest.mark.parametrize(
    ("row", "metric"), [(row, metric) for row, metrics in SIGNALS.items() for metric in metrics]
)
def test_each_signal_has_a_panel_with_a_dashed_week_ago_overlay(
    dashboard: dict[str, Any], row: str, metric: str
) -> None:
    selector = re.compile(rf"\b{metric}\{{")
    panels = [
        panel
        for panel in rows(dashboard)[row]
        if any(selector.search(target["expr"]) for target in panel["targets"])
    ]
    assert len(panels) == 1, [panel["title"] for panel in panels]
    panel = panels[0]
    now, week_ago = panel["targets"]
    assert week_ago["expr"] == now["expr"].removesuffix(")") + " offset 1w)"
    assert week_ago["legendFormat"] == f"{now['legendFormat']} week ago"
    dashed = [
        override
        for override in panel["fieldConfig"]["overrides"]
        if override["matcher"] == {"id": "byFrameRefID", "options": week_ago["refId"]}
    ]
    assert len(dashed) == 1, panel["title"]
    styles = {prop["id"]: prop["value"] for prop in dashed[0]["properties"]}
    assert styles["custom.lineStyle"]["fill"] == "dash", panel["title"]
    for override in panel["fieldConfig"]["overrides"]:  # the current line stays solid
        assert override["matcher"]["options"] != now["refId"], panel["title"]


def test_hourly_sessions_panel_shows_the_newest_complete_hour(dashboard: dict[str, Any]) -> None:
    hourly = [
        panel
        for panel in rows(dashboard)["Sessions"]
        if "braze_hourly_sessions{" in panel["targets"][0]["expr"]
    ]
    assert [panel["title"] for panel in hourly] == ["Hourly sessions per app"]
    assert "newest complete hour" in hourly[0]["description"]


def test_every_query_aggregates_away_the_target_labels(dashboard: dict[str, Any]) -> None:
    # Restarts (a new instance or pod) and replicas must neither split nor double a line.
    for panel in graphs(dashboard):
        for target in panel["targets"]:
            expr, legend = target["expr"], target["legendFormat"]
            where = f"{panel['title']}: {expr}"
            found = AGGREGATED.fullmatch(expr)
            assert found, where
            assert _balanced(found.group("inner")), where  # one aggregation holds it all
            if found.group("by"):
                by = found.group("by").split(", ")
                assert set(by) <= SERIES_LABELS, where
                if {"workspace", "app"} <= set(by):
                    assert legend.startswith("{{workspace}} / {{app}}"), where
            else:
                assert _series_names(found.group("inner")) <= UNLABELLED, where
            assert not re.search(r"\b(instance|pod|job)\b", expr + legend), where


def _series_names(expr: str) -> set[str]:
    """Metric names in a query: identifiers outside {...}, [...] and offsets that call nothing."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]| offset \w+", "", expr)
    return set(re.findall(r"[A-Za-z_:][\w:]*(?![\w:(])", bare))


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_panels_have_sensible_units(dashboard: dict[str, Any]) -> None:
    units = {
        panel["title"]: panel["fieldConfig"]["defaults"]["unit"] for panel in graphs(dashboard)
    }
    signals = {
        f"{signal} per {scope}": "short"
        for signal in (
            "Monthly active users",
            "Daily active users",
            "New users",
            "Uninstalls",
            "Daily sessions",
            "Hourly sessions",
        )
        for scope in ("app", "workspace")
    }
    assert units == {
        **signals,
        "MAU change vs 7 days ago": "percentunit",
        "Poll success": "short",
        "Newest data point age": "s",
        "Braze API requests by status code": "reqps",
        "Rate-limit headroom": "short",
        "Rate-limit paused": "short",
        "Poll cycle duration": "s",
    }


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            assert (grid["x"], grid["w"], grid["h"]) == (0, 24, 1), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, panel["title"]
        cells |= area


def test_panels_sit_below_their_row_and_above_the_next(dashboard: dict[str, Any]) -> None:
    # Grafana files a panel under the row above it by position, so list order and y agree.
    tops = [panel["gridPos"]["y"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert tops == sorted(tops)
    bounds = zip(tops, [*tops[1:], float("inf")], strict=True)
    for (top, next_top), panels in zip(bounds, rows(dashboard).values(), strict=True):
        for panel in panels:
            grid = panel["gridPos"]
            assert top < grid["y"] and grid["y"] + grid["h"] <= next_top, panel["title"]
