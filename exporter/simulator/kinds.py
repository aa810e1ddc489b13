"""The six kinds of data series the simulator serves, and which request asks for which."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["day", "hour"]

_SESSIONS_PATH = "/sessions/data_series"


@dataclass(frozen=True)
class Kind:
    name: str  # as in Fault.kpi and expected_value
    path: str
    value_key: str  # key of the value in each point of the answer's `data`
    permission: str  # what the REST API key needs for `path`
    unit: Unit  # the period one point covers
    nightly: bool = False  # computed nightly: the newest point is yesterday's, never partial


def _user_count(name: str, *, nightly: bool = False) -> Kind:
    return Kind(
        name=name,
        path=f"/kpi/{name}/data_series",
        value_key=name,
        permission=f"kpi.{name}.data_series",
        unit="day",
        nightly=nightly,
    )


def _sessions(name: str, unit: Unit) -> Kind:
    return Kind(name, _SESSIONS_PATH, "sessions", "sessions.data_series", unit)


_ALL: tuple[Kind, ...] = (
    _user_count("mau", nightly=True),
    _user_count("dau"),
    _user_count("new_users"),
    _user_count("uninstalls"),
    _sessions("sessions", "day"),
    _sessions("sessions_hourly", "hour"),
)
_BY_NAME: dict[str, Kind] = {kind.name: kind for kind in _ALL}

KINDS: tuple[str, ...] = tuple(_BY_NAME)
ALL_PERMISSIONS: frozenset[str] = frozenset(kind.permission for kind in _ALL)


def kind_named(name: str) -> Kind:
    if name not in _BY_NAME:
        raise ValueError(f"unknown kind {name!r}; known: {', '.join(KINDS)}")
    return _BY_NAME[name]


def kinds_at(path: str) -> tuple[Kind, ...]:
    """The kinds served at `path`: none for an unknown path, two (a day, an hour) for sessions."""
    return tuple(kind for kind in _ALL if kind.path == path)


def kind_of(path: str, unit: str | None) -> Kind | None:
    """The kind a request asks for; None if its path serves none, or not in that `unit`."""
    served = kinds_at(path)
    if len(served) == 1:  # the KPI endpoints take no unit
        return served[0]
    wanted = "day" if unit is None else unit
    return next((kind for kind in served if kind.unit == wanted), None)
