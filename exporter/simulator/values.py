"""The value model: the complete value of one period of one series, with no HTTP in sight.

An app's user counts are shares of its MAU on a slow trend, with a weekly rhythm on the
local date and a little noise. Its sessions are counted per hour: DAU times sessions per
user, spread over the day by a curve that is low at night and high in the evening; a day's
sessions are the sum of its hours. Users overlap between apps, so a workspace counts fewer
users than the sum of its apps; sessions do not overlap, so they add up exactly.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from zoneinfo import ZoneInfo

from exporter.simulator.kinds import Kind
from exporter.simulator.periods import UTC, hours_of_day, is_hour_start
from exporter.simulator.workspaces import SimApp, SimWorkspace, app_of, zone_of

_TREND_EPOCH = datetime.date(2026, 1, 1)  # the day an app's MAU equals its base_mau
_DAILY_GROWTH = 0.0005
_SHARE_OF_MAU = {"mau": 1.0, "dau": 0.20, "new_users": 0.01, "uninstalls": 0.002}
_WEEKLY_SWING = {"mau": 0.015, "dau": 0.06, "new_users": 0.08, "uninstalls": 0.05}
_NOISE = 0.004
_WORKSPACE_OVERLAP = 0.85

_SESSIONS_PER_USER = 2.5
_HOURLY_NOISE = 0.01
# Share of an average hour's sessions, by local hour of day; averages exactly 1. Alerts
# compare an hour with the hour 168 hours earlier, which across a DST change is the
# neighbouring local hour, so no step exceeds 30 %: the rhythm must never look like an
# outage. (The spring-forward day skips 02:00, so its 01:00 -> 03:00 step is larger.)
HOURLY_CURVE: tuple[float, ...] = (
    0.80, 0.62, 0.48, 0.37, 0.29, 0.33, 0.42, 0.54, 0.68, 0.84, 0.98, 1.08,
    1.18, 1.20, 1.18, 1.20, 1.28, 1.40, 1.58, 1.76, 1.84, 1.62, 1.30, 1.03,
)  # fmt: skip


def user_count(app: SimApp, kind: str, day: datetime.date) -> int:
    """One app's mau, dau, new_users or uninstalls on one local day."""
    trend = max(0.1, 1 + _DAILY_GROWTH * (day - _TREND_EPOCH).days)
    weekly = 1 + _WEEKLY_SWING[kind] * math.sin(2 * math.pi * day.weekday() / 7)
    noise = 1 + _NOISE * _stable_noise(app.app_id, kind, day.isoformat())
    return max(0, round(app.base_mau * _SHARE_OF_MAU[kind] * trend * weekly * noise))


def hourly_sessions(app: SimApp, zone: ZoneInfo, hour: datetime.datetime) -> int:
    """One app's sessions in the hour that starts at the instant `hour`."""
    local = hour.astimezone(zone)
    return _sessions_in_hour(app, user_count(app, "dau", local.date()), local)


def daily_sessions(app: SimApp, zone: ZoneInfo, day: datetime.date) -> int:
    """One app's sessions on one local day: the sum of its hours, however many it has."""
    dau = user_count(app, "dau", day)
    return sum(_sessions_in_hour(app, dau, hour) for hour in hours_of_day(zone, day))


def complete_value(
    workspace: SimWorkspace,
    kind: Kind,
    app_id: str | None,
    period: datetime.date | datetime.datetime,
) -> int:
    """The complete value of `kind` for one app (None: the whole workspace) in one period:
    a local date for daily kinds, the aware start instant of an hour for hourly ones."""
    zone = zone_of(workspace)
    _check_period(zone, kind, period)
    apps = workspace.apps if app_id is None else (app_of(workspace, app_id),)
    total = sum(_app_value(app, zone, kind, period) for app in apps)
    if app_id is None and kind.name in _SHARE_OF_MAU:
        return round(_WORKSPACE_OVERLAP * total)
    return total


def _app_value(
    app: SimApp, zone: ZoneInfo, kind: Kind, period: datetime.date | datetime.datetime
) -> int:
    if isinstance(period, datetime.datetime):
        return hourly_sessions(app, zone, period)
    if kind.name in _SHARE_OF_MAU:
        return user_count(app, kind.name, period)
    return daily_sessions(app, zone, period)


def _check_period(zone: ZoneInfo, kind: Kind, period: datetime.date | datetime.datetime) -> None:
    if kind.unit == "day":
        if isinstance(period, datetime.datetime) or not isinstance(period, datetime.date):
            raise ValueError(f"{kind.name} is daily: its period is a datetime.date")
    elif not isinstance(period, datetime.datetime) or period.tzinfo is None:
        raise ValueError(f"{kind.name} is hourly: its period is an aware datetime.datetime")
    elif not is_hour_start(zone, period):
        raise ValueError(f"{period.isoformat()} does not start an hour in {zone.key}")


def _sessions_in_hour(app: SimApp, dau: int, local_hour: datetime.datetime) -> int:
    average_hour = dau * _SESSIONS_PER_USER / 24
    instant = str(int(local_hour.astimezone(UTC).timestamp()))
    noise = 1 + _HOURLY_NOISE * _stable_noise(app.app_id, "sessions", instant)
    return max(0, round(average_hour * HOURLY_CURVE[local_hour.hour] * noise))


def _stable_noise(app_id: str, kind: str, period: str) -> float:
    """A number in [-1, 1] that is the same in every process (unlike the built-in hash())."""
    digest = hashlib.blake2b(f"{app_id}|{kind}|{period}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 0xFFFF_FFFF * 2 - 1
