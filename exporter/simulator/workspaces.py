"""The workspaces and apps a simulator serves."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exporter.simulator.kinds import ALL_PERMISSIONS


@dataclass(frozen=True)
class SimApp:
    app_id: str
    name: str
    base_mau: int


@dataclass(frozen=True)
class SimWorkspace:
    name: str
    api_key: str
    apps: tuple[SimApp, ...] = ()
    rate_limit: int = 250_000  # requests per clock hour, shared by every endpoint
    permissions: frozenset[str] = ALL_PERMISSIONS  # an endpoint whose permission is missing: 403
    time_zone: str = "UTC"  # IANA name; the company time zone that cuts days and hours


class UnknownApp(ValueError):
    """An app_id that is not an app of the workspace."""


def app_of(workspace: SimWorkspace, app_id: str) -> SimApp:
    for app in workspace.apps:
        if app.app_id == app_id:
            return app
    raise UnknownApp("app_id is not an app of this workspace")


def zone_of(workspace: SimWorkspace) -> ZoneInfo:
    """The workspace's time zone; ValueError naming the workspace if there is no such zone."""
    try:
        return ZoneInfo(workspace.time_zone)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not even a valid key
        raise ValueError(
            f"workspace {workspace.name!r}: unknown time zone {workspace.time_zone!r}"
        ) from None
