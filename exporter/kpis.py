"""The Braze KPI series the exporter knows, and how each one is exposed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kpi:
    """One Braze KPI data series and the Prometheus metrics its newest point feeds."""

    name: str  # the `kpi` label value and the config key
    path: str  # Braze endpoint
    value_key: str  # key of the value in each point of the answer's `data`
    app_metric: str  # gauge for one app of a workspace
    workspace_metric: str  # gauge for the whole workspace (every app)
    description: str  # used in HELP texts


MAU = Kpi(
    name="mau",
    path="/kpi/mau/data_series",
    value_key="mau",
    app_metric="braze_monthly_active_users",
    workspace_metric="braze_workspace_monthly_active_users",
    description="Monthly active users (rolling 30 days)",
)

SUPPORTED_KPIS: dict[str, Kpi] = {kpi.name: kpi for kpi in (MAU,)}
