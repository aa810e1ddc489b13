"""The Grafana dashboard in monitoring/: its structure. Its queries run in test_prometheus_e2e."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import DASHBOARD_FILE

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


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
    assert len(ids) == len(set(ids)) == 8
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_no_datasource_uid_is_hard_coded() -> None:
    text = DASHBOARD_FILE.read_text()
    uids = {line.split(":", 1)[1].strip(' ",') for line in text.splitlines() if '"uid"' in line}
    assert uids == {"${datasource}", "braze-exporter-kpis"}


def test_panels_cover_what_operators_look_at_with_sensible_units(
    dashboard: dict[str, Any],
) -> None:
    units = {
        panel["title"]: panel["fieldConfig"]["defaults"]["unit"] for panel in dashboard["panels"]
    }
    assert units == {
        "Monthly active users per app": "short",
        "Monthly active users per workspace": "short",
        "MAU change vs 7 days ago": "percentunit",
        "Newest data point age": "s",
        "Poll success": "short",
        "Braze API requests by status code": "reqps",
        "Rate-limit headroom": "short",
        "Poll cycle duration": "s",
    }


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, panel["title"]
        cells |= area
