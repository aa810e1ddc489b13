"""What Braze itself answers to an authenticated request that the rate limit let through."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from exporter.simulator.kinds import Kind, kind_of, kinds_at
from exporter.simulator.periods import (
    UTC,
    Period,
    daily_periods,
    format_time,
    hourly_periods,
    local_date,
)
from exporter.simulator.replies import Reply, error_reply, json_reply
from exporter.simulator.values import complete_value
from exporter.simulator.workspaces import SimWorkspace, UnknownApp, app_of, zone_of

_MAX_LENGTH = 100


class _BadRequest(ValueError):
    """A request parameter Braze would refuse with a 400."""


def answer(
    workspace: SimWorkspace,
    method: str,
    path: str,
    params: Mapping[str, str],
    *,
    now: datetime.datetime,
    time_format: str,
) -> Reply:
    """The answer to one request; `now` is an aware datetime."""
    if method != "GET":
        return error_reply(405, "Method Not Allowed", {"Allow": "GET"})
    served = kinds_at(path)
    if not served:
        return error_reply(404, "Not Found")
    permission = served[0].permission  # one endpoint, one permission, whichever unit
    if permission not in workspace.permissions:
        return error_reply(403, f"This API key does not have the {permission} permission")
    try:
        kind = _parse_unit(path, params.get("unit"))
        length = _parse_length(params.get("length"))
        ending_at = _parse_ending_at(params.get("ending_at"), now)
        app_id = params.get("app_id")
        if app_id is not None:
            app_of(workspace, app_id)
    except (_BadRequest, UnknownApp) as error:
        return error_reply(400, str(error))
    try:
        periods = periods_ending(workspace, kind, min(ending_at, now), length)
        data = [
            _point(workspace, kind, app_id, period, now=now, time_format=time_format)
            for period in periods
        ]
    except OverflowError:  # the series would begin before the year 1
        return error_reply(400, "ending_at is out of range")
    return json_reply(200, {"message": "success", "data": data})


def periods_ending(
    workspace: SimWorkspace, kind: Kind, ending: datetime.datetime, length: int
) -> list[Period]:
    """The periods of an answer, oldest first: the newest contains `ending`, except for a
    nightly kind (MAU), whose newest is the local day before `ending`'s."""
    zone = zone_of(workspace)
    if kind.unit == "hour":
        return hourly_periods(zone, ending, length)
    last = local_date(zone, ending) - datetime.timedelta(days=1 if kind.nightly else 0)
    return daily_periods(zone, last, length)


def _point(
    workspace: SimWorkspace,
    kind: Kind,
    app_id: str | None,
    period: Period,
    *,
    now: datetime.datetime,
    time_format: str,
) -> dict[str, object]:
    """One point of `data`; a period still counting at `now` has its share of the value."""
    value = complete_value(workspace, kind, app_id, period.key)
    elapsed = period.elapsed(now)
    if elapsed < 1:
        value = round(value * elapsed)
    return {
        "time": format_time(zone_of(workspace), kind.unit, period, time_format),
        kind.value_key: value,
    }


def _parse_unit(path: str, raw: str | None) -> Kind:
    kind = kind_of(path, raw)
    if kind is None:
        raise _BadRequest("unit must be day or hour")
    return kind


def _parse_length(raw: str | None) -> int:
    if raw is None:
        raise _BadRequest("length is required")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= _MAX_LENGTH):
        raise _BadRequest(f"length must be an integer between 1 and {_MAX_LENGTH}")
    return int(raw)


def _parse_ending_at(raw: str | None, now: datetime.datetime) -> datetime.datetime:
    if raw is None:
        return now
    # Python 3.10's fromisoformat() does not know the "Z" suffix.
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _BadRequest("ending_at must be an ISO-8601 datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # naive: taken as UTC
