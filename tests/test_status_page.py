"""The status page rendered from hand-built snapshots, read back with the stdlib HTML parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from exporter.config import Config, read_api_key, validate_config
from exporter.series import Series, series_of
from exporter.state import SeriesState, Snapshot
from exporter.status_page import StatusInputs, render_status_page
from exporter.values import KpiPoint, RateLimitInfo
from tests.conftest import day_point, hour_point

KEY = "secret-key-0123456789abcdef"
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc).timestamp()
BERLIN = ZoneInfo("Europe/Berlin")
HOSTILE = '<script>alert("app")</script>'


def make_config(*workspaces: Mapping[str, object], **poll: object) -> Config:
    settings: dict[str, object] = {"kpis": ["mau", "dau"], **poll}
    return validate_config(
        {"poll": settings, "workspaces": list(workspaces)}, environ={"BRAZE_KEY": KEY}
    )


def workspace(name: str = "prod", **overrides: object) -> dict[str, object]:
    return {
        "name": name,
        "instance": "US-03",
        "api_key_env": "BRAZE_KEY",
        "apps": [{"name": "ios", "id": f"{name}-ios"}, {"name": "web", "id": f"{name}-web"}],
        **overrides,
    }


def snapshot_of(
    config: Config,
    states: Mapping[Series, SeriesState] | None = None,
    *,
    paused_until: Mapping[str, float] | None = None,
    rate_limits: Mapping[str, RateLimitInfo] | None = None,
) -> Snapshot:
    """Every series of the config, as the state store holds them: unpolled unless given."""
    given = states or {}
    return Snapshot(
        series={s: given.get(s, SeriesState()) for s in series_of(config)},
        rate_limits=dict(rate_limits or {}),
        paused_until={w.name: 0.0 for w in config.workspaces} | dict(paused_until or {}),
        last_cycle_seconds=1.25,
        cycles_completed=3,
    )


def inputs(config: Config, snapshot: Snapshot | None = None, **overrides: object) -> StatusInputs:
    values: dict[str, object] = {
        "snapshot": snapshot or snapshot_of(config),
        "config": config,
        "config_file": "/etc/braze-exporter/config.yaml",
        "version": "1.2.3",
        "now": NOW,
        "next_poll": NOW + 600,
        "metrics_path": "/metrics",
        "last_reload_successful": True,
        "last_reload_time": NOW - 3600,
        **overrides,
    }
    return StatusInputs(**values)  # type: ignore[arg-type]


def find(config: Config, workspace: str, app: str | None, kpi: str) -> Series:
    return next(
        s for s in series_of(config) if (s.workspace, s.app, s.kpi.name) == (workspace, app, kpi)
    )


@dataclass
class Row:
    kind: str
    data: dict[str, str]
    cells: dict[str, str] = field(default_factory=dict)  # text by the cell's class


class Page(HTMLParser):
    """What a reader sees: the title, every tag, the facts list, the table rows and links."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.title = ""
        self.facts: dict[str, str] = {}
        self.rows: list[Row] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._where: tuple[str, str] | None = None  # what the text read now belongs to
        self._buffer: list[str] = []
        self._last_fact = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = {name: value or "" for name, value in attrs}
        if tag == "a":
            self.links.append(found["href"])
        elif tag == "tr" and found.get("class") in ("series", "workspace"):
            data = {k.removeprefix("data-"): v for k, v in found.items() if k.startswith("data-")}
            self.rows.append(Row(found["class"], data))
        elif tag in ("title", "dt", "dd") or (tag == "td" and self.rows):
            self._where, self._buffer = (tag, found.get("class", "")), []

    def handle_endtag(self, tag: str) -> None:
        if self._where is None or self._where[0] != tag:
            return
        text = " ".join("".join(self._buffer).split())
        if tag == "title":
            self.title = text
        elif tag == "dt":
            self._last_fact = text
        elif tag == "dd":
            self.facts[self._last_fact] = text
        else:
            self.rows[-1].cells[self._where[1]] = text
        self._where = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._where is not None:
            self._buffer.append(data)

    def series(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "series"]

    def row(self, workspace: str, app: str | None, kpi: str) -> Row:
        (found,) = (
            r
            for r in self.series()
            if (r.data["workspace"], r.data["app"], r.data["kpi"]) == (workspace, app or "", kpi)
        )
        return found

    def workspace(self, name: str) -> Row:
        (found,) = (r for r in self.rows if r.kind == "workspace" and r.data["workspace"] == name)
        return found


def render(page_inputs: StatusInputs) -> tuple[str, Page]:
    html = render_status_page(page_inputs)
    page = Page(html)
    assert "script" not in page.tags
    return html, page


def test_one_row_per_series_in_config_order() -> None:
    config = make_config(
        workspace("prod"), workspace("stage", whole_workspace=False), kpis=["mau", "dau"]
    )
    _, page = render(inputs(config))
    assert page.title == "Braze Exporter"
    assert [(r.data["workspace"], r.data["app"], r.data["kpi"]) for r in page.series()] == [
        (s.workspace, s.app or "", s.kpi.name) for s in series_of(config)
    ]
    assert len(page.series()) == 10  # prod: 3 series a KPI, stage (no whole workspace): 2
    assert page.row("prod", None, "mau").cells["app"] == "(whole workspace)"
    assert "10 series: 10 not polled yet." in "".join(page.text)


def test_values_results_and_ages() -> None:
    config = make_config(workspace())
    ios, web = find(config, "prod", "ios", "dau"), find(config, "prod", "web", "dau")
    states = {
        ios: SeriesState(
            day_point(date(2026, 11, 28), 1_234_567), True, NOW - 180, None, NOW - 180
        ),
        web: SeriesState(None, False, None, "poll failed: status=500", NOW - 42),
    }
    _, page = render(inputs(config, snapshot_of(config, states)))
    ok = page.row("prod", "ios", "dau")
    assert ok.data["result"] == "succeeded"
    assert (ok.data["value"], ok.cells["value"]) == ("1234567", "1,234,567")
    assert ok.cells["period"] == "2026-11-28"
    assert ok.cells["age"] == "ended 10 h ago"  # the day ended at midnight UTC
    assert ok.cells["result"] == "succeeded 2026-11-29T09:57:00Z (3 min ago)"
    assert ok.cells["error"] == ""
    assert ok.cells["next"] == "2026-11-29T10:10:00Z (in 10 min)"
    failed = page.row("prod", "web", "dau")
    assert failed.cells["result"] == "failed 2026-11-29T09:59:18Z (42 s ago)"
    assert failed.cells["error"] == "poll failed: status=500"
    assert failed.cells["value"] == "none yet"
    pending = page.row("prod", None, "mau")
    assert pending.cells["result"] == "not polled yet"
    assert pending.cells["value"] == pending.cells["period"] == "none yet"


def test_a_failed_poll_keeps_showing_the_last_good_value() -> None:
    config = make_config(workspace())
    ios = find(config, "prod", "ios", "mau")
    point = day_point(date(2026, 11, 27), 99)
    states = {ios: SeriesState(point, False, NOW - 900, "poll failed: status=503", NOW - 5)}
    _, page = render(inputs(config, snapshot_of(config, states)))
    row = page.row("prod", "ios", "mau")
    assert (row.data["result"], row.cells["value"], row.cells["period"]) == (
        "failed",
        "99",
        "2026-11-27",
    )
    assert row.cells["error"] == "poll failed: status=503"
    assert "1 failed" in "".join(page.text)


@pytest.mark.parametrize(
    ("kpi", "point", "shown"),
    [
        ("dau", day_point(date(2026, 11, 28), 1, BERLIN), "2026-11-28"),  # from 23:00 UTC
        (
            "sessions_hourly",
            hour_point(datetime(2026, 11, 29, 9, tzinfo=BERLIN), 1),
            "2026-11-29 09:00\u201310:00 Europe/Berlin",
        ),
        (  # the repeated hour of the fall-back: the two ends differ only in their offsets
            "sessions_hourly",
            hour_point(datetime(2026, 10, 25, 0, tzinfo=timezone.utc), 1),
            "2026-10-25 02:00 CEST\u201302:00 CET Europe/Berlin",
        ),
        ("dau", day_point(date(2026, 10, 25), 1, BERLIN), "2026-10-25"),  # 25 hours long
    ],
)
def test_periods_are_shown_in_the_workspace_time_zone(
    kpi: str, point: KpiPoint, shown: str
) -> None:
    config = make_config(workspace(time_zone="Europe/Berlin"), kpis=["dau", "sessions_hourly"])
    series = find(config, "prod", "ios", kpi)
    states = {series: SeriesState(point, True, NOW, None, NOW)}
    _, page = render(inputs(config, snapshot_of(config, states)))
    assert page.row("prod", "ios", kpi).cells["period"] == shown


def test_hostile_text_is_escaped() -> None:
    config = make_config(
        workspace('prod"><b>', apps=[{"name": HOSTILE, "id": "<img src=x onerror=alert(1)>"}])
    )
    series = find(config, 'prod"><b>', HOSTILE, "dau")
    error = 'poll failed: status=400, error=<img src=x onerror="alert(2)">'
    states = {series: SeriesState(None, False, None, error, NOW)}
    html, page = render(
        inputs(
            config,
            snapshot_of(config, states),
            config_file="/tmp/<script>.yaml",
            version="1.0<b>",
            metrics_path='/m"><script>',
        )
    )
    assert set(page.tags) <= {
        *("html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "nav", "ul", "li"),
        *("a", "code", "dl", "dt", "dd", "span", "time", "table", "thead", "tbody", "tr", "th"),
        *("td", "abbr"),
    }
    assert "<script>" not in html
    assert "<img" not in html
    row = page.row('prod"><b>', HOSTILE, "dau")
    assert (row.data["app"], row.cells["app"]) == (HOSTILE, HOSTILE)
    assert row.cells["error"] == error
    assert page.workspace('prod"><b>').cells["name"] == 'prod"><b>'
    assert page.facts["Config file"] == "/tmp/<script>.yaml"
    assert page.facts["Version"] == "1.0<b>"
    assert page.links[0] == 'm"><script>'


def test_rate_limits_and_pauses_per_workspace() -> None:
    config = make_config(workspace("prod"), workspace("stage"), interval="5m", timeout="2s")
    reset = NOW + 1200
    snapshot = snapshot_of(
        config,
        paused_until={"stage": NOW + 900},
        rate_limits={"prod": RateLimitInfo(500, 412, reset), "stage": RateLimitInfo(None, 0, None)},
    )
    _, page = render(inputs(config, snapshot, next_poll=NOW + 60))
    prod, stage = page.workspace("prod"), page.workspace("stage")
    assert prod.cells["instance"] == "US-03 https://rest.iad-03.braze.com"
    assert prod.cells["remaining"] == "412 of 500"
    assert prod.cells["reset"] == "2026-11-29T10:20:00Z (in 20 min)"
    assert prod.cells["paused"] == "not paused"
    assert stage.cells["remaining"] == "0"
    assert stage.cells["reset"] == "unknown"
    assert stage.cells["paused"] == "paused until 2026-11-29T10:15:00Z (in 15 min)"
    # Cycles at +1, +6, +11 and +16 min: the paused workspace waits for the one at +16.
    assert page.row("prod", "ios", "mau").cells["next"] == "2026-11-29T10:01:00Z (in 1 min)"
    assert page.row("stage", "ios", "mau").cells["next"] == "2026-11-29T10:16:00Z (in 16 min)"


def test_a_pause_that_has_ended_is_not_shown() -> None:
    config = make_config(workspace())
    _, page = render(inputs(config, snapshot_of(config, paused_until={"prod": NOW - 1})))
    assert page.workspace("prod").cells["paused"] == "not paused"
    assert page.workspace("prod").cells["remaining"] == "no answer yet"


def test_exporter_facts_and_links() -> None:
    config = make_config(workspace(url="http://127.0.0.1:8080/braze", instance=None))
    _, page = render(inputs(config, metrics_path="/custom/metrics"))
    assert page.facts["Version"] == "1.2.3"
    assert page.facts["Config file"] == "/etc/braze-exporter/config.yaml"
    assert page.facts["Last config reload"] == (
        "succeeded, config loaded 2026-11-29T09:00:00Z (1 h ago)"
    )
    assert page.facts["Poll cycles"] == "3 completed, the last one took 1.2 s"
    assert page.facts["Next poll cycle"] == "2026-11-29T10:10:00Z (in 10 min)"
    assert page.facts["Poll interval"] == "15 min"
    assert page.links == ["custom/metrics", "healthz", "readyz"]  # relative: proxies with prefixes
    assert page.workspace("prod").cells["instance"] == "http://127.0.0.1:8080/braze"


def test_a_failed_reload_and_an_unknown_next_poll() -> None:
    config = make_config(workspace())
    _, page = render(inputs(config, last_reload_successful=False, next_poll=None))
    assert page.facts["Last config reload"] == (
        "failed; still serving the config loaded 2026-11-29T09:00:00Z (1 h ago)"
    )
    assert page.facts["Next poll cycle"] == "unknown"
    assert page.row("prod", "ios", "mau").cells["next"] == "unknown"


@pytest.mark.parametrize(
    ("offset", "shown"),
    [
        (0, "now"),
        (-42, "42 s ago"),
        (-180, "3 min ago"),
        (-9000, "2 h 30 min ago"),
        (-3600, "1 h ago"),
        (-90000, "1 d 1 h ago"),
        (600, "in 10 min"),
    ],
)
def test_relative_times(offset: float, shown: str) -> None:
    config = make_config(workspace())
    _, page = render(inputs(config, next_poll=NOW + offset))
    assert page.facts["Next poll cycle"].endswith(f"({shown})")


def test_no_api_key_even_when_the_config_holds_one() -> None:
    config = make_config(workspace("prod"), workspace("stage"))
    assert read_api_key(config.workspaces[0], {}).get_secret_value() == KEY  # kept by validation
    ios = find(config, "prod", "ios", "mau")
    states = {ios: SeriesState(None, False, None, "poll failed: status=401", NOW)}
    html, _ = render(inputs(config, snapshot_of(config, states)))
    assert KEY not in html
    assert KEY[:8] not in html
