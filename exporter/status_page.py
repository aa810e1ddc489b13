"""The status page at /: what each workspace and series last did, as plain server-side HTML.

One snapshot, rendered whole: no JavaScript, every text from the config or from Braze escaped.
The page takes no API key among its inputs, so it can show none.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from html import escape

from exporter.config import Config, WorkspaceConfig
from exporter.kpis import Unit
from exporter.series import Series
from exporter.state import SeriesState, Snapshot
from exporter.values import KpiPoint

TITLE = "Braze Exporter"
WHOLE_WORKSPACE = "(whole workspace)"
EN_DASH = "\u2013"


@dataclass(frozen=True)
class StatusInputs:
    snapshot: Snapshot
    config: Config  # workspaces, their zones and URLs
    config_file: str
    version: str
    now: float  # Unix time
    next_poll: float | None  # Unix time of the next scheduled poll cycle, None if unknown
    metrics_path: str  # e.g. "/metrics"
    last_reload_successful: bool
    last_reload_time: float | None  # Unix time of the last successful (re)load


def render_status_page(inputs: StatusInputs) -> str:
    return _PAGE.substitute(
        title=TITLE,
        rendered=_iso(inputs.now),
        # Relative links keep working behind a proxy that serves the exporter under a prefix.
        metrics_href=escape(inputs.metrics_path.lstrip("/")),
        metrics_path=escape(inputs.metrics_path),
        exporter=_exporter(inputs),
        workspaces=_workspace_rows(inputs),
        summary=_series_summary(inputs.snapshot.series.values()),
        series=_series_rows(inputs),
    )


def _exporter(inputs: StatusInputs) -> str:
    snapshot = inputs.snapshot
    loaded = _maybe_moment(inputs.last_reload_time, inputs.now)
    reload = (
        f'<span class="ok">succeeded</span>, config loaded {loaded}'
        if inputs.last_reload_successful
        else f'<span class="bad">failed</span>; still serving the config loaded {loaded}'
    )
    cycles = f"{snapshot.cycles_completed} completed"
    if snapshot.last_cycle_seconds is not None:
        cycles += f", the last one took {snapshot.last_cycle_seconds:.1f} s"
    rows = (
        ("Version", escape(inputs.version)),
        ("Config file", f"<code>{escape(inputs.config_file)}</code>"),
        ("Last config reload", reload),
        ("Poll cycles", cycles),
        ("Poll interval", _span(inputs.config.poll.interval)),
        ("Next poll cycle", _maybe_moment(inputs.next_poll, inputs.now)),
    )
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<dl class="exporter">{items}</dl>'


def _workspace_rows(inputs: StatusInputs) -> str:
    return "\n".join(_workspace_row(workspace, inputs) for workspace in inputs.config.workspaces)


def _workspace_row(workspace: WorkspaceConfig, inputs: StatusInputs) -> str:
    now = inputs.now
    info = inputs.snapshot.rate_limits.get(workspace.name)
    remaining, reset = "no answer yet", "unknown"
    if info is not None:
        remaining = "unknown" if info.remaining is None else str(info.remaining)
        if info.remaining is not None and info.limit is not None:
            remaining += f" of {info.limit}"
        reset = _maybe_moment(info.reset_at, now)
    paused_until = inputs.snapshot.paused_until.get(workspace.name, 0.0)
    pause = "not paused"
    if paused_until > now:
        pause = f'<span class="bad">paused until {_moment(paused_until, now)}</span>'
    instance = f"<code>{escape(workspace.base_url)}</code>"
    if workspace.instance is not None:
        instance = f"{escape(workspace.instance)} {instance}"
    cells = (
        ("name", escape(workspace.name)),
        ("instance", instance),
        ("zone", escape(workspace.time_zone)),
        ("remaining", remaining),
        ("reset", reset),
        ("paused", pause),
    )
    return _tr("workspace", {"workspace": workspace.name}, cells)


def _series_summary(states: Iterable[SeriesState]) -> str:
    counts = {"succeeded": 0, "failed": 0, "not polled yet": 0}
    for state in states:
        counts[_poll_result(state)] += 1
    total = sum(counts.values())
    parts = ", ".join(f"{count} {result}" for result, count in counts.items() if count)
    return f'<p class="summary">{total} series{": " if parts else ""}{parts}.</p>'


def _series_rows(inputs: StatusInputs) -> str:
    workspaces = {w.name: w for w in inputs.config.workspaces}
    return "\n".join(
        _series_row(series, state, workspaces.get(series.workspace), inputs)
        for series, state in inputs.snapshot.series.items()
    )


def _series_row(
    series: Series, state: SeriesState, workspace: WorkspaceConfig | None, inputs: StatusInputs
) -> str:
    now = inputs.now
    zone: tzinfo = timezone.utc if workspace is None else workspace.zone
    point = state.point
    result = _poll_result(state)
    polled = (
        result if state.last_poll_time is None else f"{result} {_moment(state.last_poll_time, now)}"
    )
    cells = (
        ("workspace", escape(series.workspace)),
        ("app", escape(series.app or WHOLE_WORKSPACE)),
        ("kpi", f'<abbr title="{escape(series.kpi.description)}">{escape(series.kpi.name)}</abbr>'),
        (
            "period",
            "none yet" if point is None else escape(period_text(point, series.kpi.unit, zone)),
        ),
        ("value", "none yet" if point is None else f"{point.value:,}"),
        ("age", "" if point is None else f"ended {_ago(now - point.end.timestamp())}"),
        ("result", polled),
        ("error", escape(state.last_error or "")),
        ("next", _maybe_moment(_next_poll_of(series.workspace, inputs), now)),
    )
    attributes = {
        "workspace": series.workspace,
        "app": series.app or "",
        "kpi": series.kpi.name,
        "result": result,
        "value": "" if point is None else str(point.value),
    }
    return _tr("series", attributes, cells)


def period_text(point: KpiPoint, unit: Unit, zone: tzinfo) -> str:
    """A point's period as its workspace names it: "2026-11-28" for a day, "2026-11-29
    09:00-10:00 Europe/Berlin" for an hour (an en dash between the times; each end with its
    offset's name where they differ, in the hours around a DST change)."""
    if unit == "day":
        # The middle of the period names its date even for a day Braze cut at another offset.
        return (point.start + (point.end - point.start) / 2).astimezone(zone).date().isoformat()
    start, end = point.start.astimezone(zone), point.end.astimezone(zone)
    if start.utcoffset() == end.utcoffset():
        return f"{start:%Y-%m-%d %H:%M}{EN_DASH}{end:%H:%M} {zone}"
    return f"{start:%Y-%m-%d %H:%M %Z}{EN_DASH}{end:%H:%M %Z} {zone}"


def _poll_result(state: SeriesState) -> str:
    if state.last_poll_success is None:
        return "not polled yet"
    return "succeeded" if state.last_poll_success else "failed"


def _next_poll_of(workspace: str, inputs: StatusInputs) -> float | None:
    """The next cycle that polls the workspace: cycles skip it while its rate-limit pause lasts."""
    if inputs.next_poll is None:
        return None
    paused_until = inputs.snapshot.paused_until.get(workspace, 0.0)
    if paused_until <= inputs.next_poll:
        return inputs.next_poll
    interval = inputs.config.poll.interval
    return inputs.next_poll + math.ceil((paused_until - inputs.next_poll) / interval) * interval


def _maybe_moment(moment: float | None, now: float) -> str:
    return "unknown" if moment is None else _moment(moment, now)


def _moment(moment: float, now: float) -> str:
    """A Unix time in UTC and relative to now."""
    return f'{_iso(moment)} <span class="ago">({_ago(now - moment)})</span>'


def _iso(moment: float) -> str:
    text = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'<time datetime="{text}">{text}</time>'


def _ago(seconds: float) -> str:
    """How far a moment `seconds` in the past is: "3 min ago"; "in 3 min" for a future one."""
    if abs(seconds) < 1:
        return "now"
    return f"{_span(abs(seconds))} ago" if seconds > 0 else f"in {_span(abs(seconds))}"


def _span(seconds: float) -> str:
    """A duration in its largest unit, and the next one below from hours up: "2 h 30 min"."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    (major, major_name), (minor, minor_name) = (
        ((86400, "d"), (3600, "h")) if whole >= 86400 else ((3600, "h"), (60, "min"))
    )
    rest = whole % major // minor
    return f"{whole // major} {major_name}" + (f" {rest} {minor_name}" if rest else "")


def _tr(kind: str, data: Mapping[str, str], cells: Iterable[tuple[str, str]]) -> str:
    """A table row with `data-*` attributes (escaped here) and cells of HTML with a class."""
    attributes = "".join(f' data-{name}="{escape(value)}"' for name, value in data.items())
    tds = "".join(f'<td class="{name}">{html}</td>' for name, html in cells)
    return f'<tr class="{kind}"{attributes}>{tds}</tr>'


_PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
td.period, td.age, time, .ago { white-space: nowrap; }
tr[data-result="failed"] td.result, td.error, .bad { color: #b00020; }
.ok { color: #1b5e20; }
dt { font-weight: bold; float: left; clear: left; width: 11em; }
dd { margin-left: 12em; }
</style></head>
<body>
<h1>$title</h1>
<p>Braze KPIs as Prometheus metrics. Values are polled from Braze on a schedule and cached;
scraping does not call Braze. Page rendered $rendered.</p>
<nav><ul>
<li><a href="$metrics_href">Metrics</a> <code>$metrics_path</code></li>
<li><a href="healthz">Health</a> <code>/healthz</code> (200 while poll cycles keep finishing)</li>
<li><a href="readyz">Readiness</a> <code>/readyz</code> (200 once the first poll cycle has
finished)</li>
</ul></nav>
<h2>Exporter</h2>
$exporter
<h2>Workspaces</h2>
<table id="workspaces">
<thead><tr><th>Workspace</th><th>Instance</th><th>Time zone</th><th>Requests left</th>
<th>Window resets</th><th>Pause</th></tr></thead>
<tbody>
$workspaces
</tbody>
</table>
<h2>Series</h2>
$summary
<table id="series">
<thead><tr><th>Workspace</th><th>App</th><th>KPI</th><th>Period</th><th>Value</th><th>Age</th>
<th>Last poll</th><th>Error</th><th>Next poll</th></tr></thead>
<tbody>
$series
</tbody>
</table>
</body>
</html>
""")
