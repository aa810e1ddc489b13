"""The series the exporter polls, derived from the config: one per workspace, app and KPI."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config import Config
from exporter.kpis import SUPPORTED_KPIS, Kpi


@dataclass(frozen=True)
class Series:
    workspace: str
    app: str | None  # None: the workspace as a whole
    app_id: str | None
    kpi: Kpi

    def describe(self) -> dict[str, str]:
        """Log fields naming this series."""
        return {"workspace": self.workspace, "app": self.app or "(workspace)", "kpi": self.kpi.name}


def series_of(config: Config) -> tuple[Series, ...]:
    """Every series the config asks for, in config order, whole workspace first."""
    planned: list[Series] = []
    for workspace in config.workspaces:
        for kpi in (SUPPORTED_KPIS[name] for name in config.poll.kpis):
            if workspace.whole_workspace:
                planned.append(Series(workspace.name, None, None, kpi))
            planned.extend(Series(workspace.name, a.name, a.id, kpi) for a in workspace.apps)
    return tuple(planned)
