"""The Braze series kinds the exporter knows, and how each one is exposed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Unit = Literal["day", "hour"]


@dataclass(frozen=True)
class Kpi:
    """One kind of Braze data series and the Prometheus metrics its newest point feeds."""

    name: str  # the `kpi` label value and the name in `poll.kpis`
    path: str  # Braze endpoint
    value_key: str  # key of the value in each point of the answer's `data`
    unit: Unit  # the period one point covers
    permission: str  # what the REST API key needs for this endpoint
    app_metric: str  # gauge for one app of a workspace
    workspace_metric: str  # gauge for the whole workspace (every app)
    description: str  # used in HELP texts
    unit_param: bool = False  # send `unit=<unit>` (the sessions endpoint serves both units)
    # Braze computes MAU nightly: a page ending at `ending_at` ends with the day before its
    # day. The other kinds end with the period of `ending_at` itself.
    one_day_behind: bool = False

    def query(self) -> dict[str, str]:
        """Request parameters that select this kind on its endpoint."""
        return {"unit": self.unit} if self.unit_param else {}


def _user_count(name: str, app_metric: str, description: str) -> Kpi:
    return Kpi(
        name=name,
        path=f"/kpi/{name}/data_series",
        value_key=name,
        unit="day",
        permission=f"kpi.{name}.data_series",
        app_metric=app_metric,
        workspace_metric=app_metric.replace("braze_", "braze_workspace_", 1),
        description=description,
    )


def _sessions(name: str, unit: Unit, app_metric: str, description: str) -> Kpi:
    return Kpi(
        name=name,
        path="/sessions/data_series",
        value_key="sessions",
        unit=unit,
        permission="sessions.data_series",
        app_metric=app_metric,
        workspace_metric=app_metric.replace("braze_", "braze_workspace_", 1),
        description=description,
        unit_param=True,
    )


MAU = dataclasses.replace(
    _user_count(
        "mau", "braze_monthly_active_users", "Monthly active users (rolling 30 days), daily point"
    ),
    one_day_behind=True,
)
DAU = _user_count("dau", "braze_daily_active_users", "Daily active users")
NEW_USERS = _user_count("new_users", "braze_daily_new_users", "New users per day")
UNINSTALLS = _user_count("uninstalls", "braze_daily_uninstalls", "Uninstalls per day")
SESSIONS = _sessions("sessions", "day", "braze_daily_sessions", "Sessions per day")
SESSIONS_HOURLY = _sessions("sessions_hourly", "hour", "braze_hourly_sessions", "Sessions per hour")

SUPPORTED_KPIS: dict[str, Kpi] = {
    kpi.name: kpi for kpi in (MAU, DAU, NEW_USERS, UNINSTALLS, SESSIONS, SESSIONS_HOURLY)
}
