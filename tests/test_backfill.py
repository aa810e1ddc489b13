"""The backfill: paging back through Braze's history, the samples the live exporter would have
served, the OpenMetrics it writes, its flags, failures and progress. The whole path through
promtool and a real Prometheus is in test_backfill_e2e.py."""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from exporter.backfill import (
    History,
    Options,
    held_points,
    parse_options,
    read_history,
    run_backfill,
    sample_times,
    write_histories,
)
from exporter.braze import BrazeClient, RetryPolicy
from exporter.config import validate_config
from exporter.kpis import MAU, SESSIONS_HOURLY, SUPPORTED_KPIS, Kpi
from exporter.progress import Progress
from exporter.series import Series
from exporter.simulator import ALL_PERMISSIONS, BrazeSimulator, Fault, SimWorkspace
from tests.conftest import (
    KEY_ENV,
    PROD,
    PROD_KEY,
    STAGE,
    FakeClock,
    config_data,
    day_point,
    hour_point,
    run_cli,
    write_config,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 27, 10, 40, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def fixed_sim(clock: FakeClock) -> Iterator[BrazeSimulator]:
    with BrazeSimulator((PROD, STAGE), clock=clock) as simulator:
        yield simulator


def client(sim: BrazeSimulator, clock: FakeClock, key: str = PROD_KEY, **extra: Any) -> BrazeClient:
    return BrazeClient(sim.url, SecretStr(key), timeout=2, retry=FAST, clock=clock, **extra)


# --- Paging ----------------------------------------------------------------------------------


def test_hourly_sessions_page_back_without_gaps_overlaps_or_extra_requests(
    fixed_sim: BrazeSimulator, clock: FakeClock
) -> None:
    series = Series("prod", "ios", "app-ios", SESSIONS_HOURLY)
    since = NOW - timedelta(days=10)
    history = read_history(client(fixed_sim, clock), series, since, clock=clock)
    assert history.error is None
    starts = [p.start for p in history.points]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    # From the hour complete at `since` (09:00-10:00 ten days ago; a page may reach an hour or
    # two further back) to the newest complete one.
    assert since - timedelta(hours=3) <= starts[0] <= since - timedelta(hours=1)
    assert starts[-1] == datetime(2026, 11, 27, 9, tzinfo=UTC)
    for point in history.points[::50]:
        assert point == hour_point(
            point.start,
            fixed_sim.expected_value(PROD_KEY, "sessions_hourly", "app-ios", point.start),
        )
    sent = fixed_sim.requests
    assert len(sent) == 3  # 242 hours: three pages of at most 100
    assert all(r.params["unit"] == "hour" and r.params["app_id"] == "app-ios" for r in sent)
    assert "ending_at" not in sent[0].params  # the first page ends now
    assert sum(int(r.params["length"]) for r in sent) <= 10 * 24 + 3


@pytest.mark.parametrize("kpi", [MAU, SUPPORTED_KPIS["dau"]], ids=["mau", "dau"])
def test_days_page_back_across_pages_including_mau_one_day_behind(
    fixed_sim: BrazeSimulator, clock: FakeClock, kpi: Kpi
) -> None:
    series = Series("prod", None, None, kpi)
    since = NOW - timedelta(days=250)
    history = read_history(client(fixed_sim, clock), series, since, clock=clock)
    assert history.error is None
    days = [p.start.date() for p in history.points]
    assert days == [days[0] + timedelta(days=n) for n in range(len(days))]  # no gap, no repeat
    assert days[-1] == date(2026, 11, 26)
    assert days[0] <= (since - timedelta(days=1)).date()
    assert len(fixed_sim.requests) == 3
    day = days[len(days) // 2]
    assert history.points[len(days) // 2] == day_point(
        day, fixed_sim.expected_value(PROD_KEY, series.kpi.name, None, day)
    )


def test_a_429_pauses_until_the_reset_then_asks_for_the_page_again(
    fixed_sim: BrazeSimulator, clock: FakeClock
) -> None:
    fixed_sim.inject(Fault(status=429, headers={"Retry-After": "120"}, times=1))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    series = Series("prod", "web", "app-web", SUPPORTED_KPIS["dau"])
    history = read_history(
        client(fixed_sim, clock), series, NOW - timedelta(days=3), sleep=sleep, clock=clock
    )
    assert history.error is None and history.points
    assert waits == [pytest.approx(120)]
    assert [r.status for r in fixed_sim.requests] == [429, 200]


def test_a_failure_halfway_keeps_the_newer_points(
    fixed_sim: BrazeSimulator, clock: FakeClock
) -> None:
    def fail_after_the_first_page(_kpi: str, _code: str, _seconds: float) -> None:
        fixed_sim.inject(Fault(status=400, message="bad request"))

    failing = client(fixed_sim, clock, on_attempt=fail_after_the_first_page)
    series = Series("prod", "ios", "app-ios", SESSIONS_HOURLY)
    history = read_history(failing, series, NOW - timedelta(days=10), clock=clock)
    assert history.error == "400: bad request"
    assert len(history.points) == 99  # the first page: 100 hours, the current one partial
    assert history.points[-1].start == datetime(2026, 11, 27, 9, tzinfo=UTC)


# --- Samples ---------------------------------------------------------------------------------


def test_each_sample_holds_the_newest_point_complete_at_its_time() -> None:
    points = [day_point(date(2026, 11, d), d) for d in (24, 25, 26)]
    midnight_25 = int(datetime(2026, 11, 25, tzinfo=UTC).timestamp())
    times = [midnight_25 - 60, midnight_25, midnight_25 + 86400 - 60, midnight_25 + 86400]
    # The 24th counts from its end (midnight of the 25th); nothing is complete before that.
    assert [(t, p.value) for t, p in held_points(points, times)] == [
        (midnight_25, 24),
        (midnight_25 + 86400 - 60, 24),
        (midnight_25 + 86400, 25),
    ]


def test_sample_times_are_multiples_of_the_step() -> None:
    assert list(sample_times(1_000.5, 1_300.0, 60)) == [1_020, 1_080, 1_140, 1_200, 1_260]
    assert list(sample_times(1_200, 1_200, 60)) == [1_200]


def test_openmetrics_families_do_not_interleave_and_labels_are_escaped() -> None:
    app = Series('w"s', "a\\b\nc", "id", SUPPORTED_KPIS["dau"])
    whole = Series('w"s', None, None, SUPPORTED_KPIS["dau"])
    histories = [
        History(app, (day_point(date(2026, 11, 25), 7),)),
        History(whole, (day_point(date(2026, 11, 25), 9),)),
    ]
    midnight = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp())
    out = io.StringIO()
    written = write_histories(out, histories, range(midnight, midnight + 120, 60), "job", "inst")
    assert written == 8  # two times: two values per series, two stamps per series
    lines = out.getvalue().splitlines()
    assert lines[-1] == "# EOF"
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert names == [
        "braze_daily_active_users",
        "braze_workspace_daily_active_users",
        "braze_kpi_point_timestamp_seconds",
    ]
    assert (
        'braze_daily_active_users{job="job",instance="inst",workspace="w\\"s",app="a\\\\b\\nc"} '
        f"7 {midnight}"
    ) in lines
    assert (
        'braze_workspace_daily_active_users{job="job",instance="inst",workspace="w\\"s"} '
        f"9 {midnight + 60}"
    ) in lines
    stamp = int(datetime(2026, 11, 25, tzinfo=UTC).timestamp())
    assert (
        f'braze_kpi_point_timestamp_seconds{{job="job",instance="inst",workspace="w\\"s",'
        f'kpi="dau"}} {stamp} {midnight}'
    ) in lines


class Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.largest_write = 0

    def write(self, text: str) -> int:
        self.largest_write = max(self.largest_write, len(text))
        return super().write(text)


def test_output_is_written_line_by_line_not_built_in_memory() -> None:
    points = tuple(day_point(date(2026, 1, 1) + timedelta(days=n), n) for n in range(300))
    histories = [History(Series("w", "a", "i", SUPPORTED_KPIS["dau"]), points)]
    start = int(points[0].end.timestamp())
    out = Recorder()
    written = write_histories(out, histories, range(start, start + 200 * 86400, 60), "j", "i")
    assert written == 2 * 200 * 1440
    assert out.largest_write < 300


# --- The command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backfill", "731d"], "--backfill: 731d is more than the 730d"),
        (["--backfill", "0s"], "--backfill: must be greater than 0"),
        (["--backfill", "soon"], "--backfill: invalid duration 'soon'"),
        (["--backfill", "7d", "--backfill.step", "0s"], "--backfill.step: must be greater than 0"),
        (["--backfill", "7d", "--backfill.step", "6m"], "--backfill.step: 6m must be whole"),
        (["--backfill", "7d", "--backfill.step", "1.5s"], "--backfill.step: 1.5s must be whole"),
    ],
)
def test_bad_flags_are_usage_errors_before_any_request(
    sim: BrazeSimulator, tmp_path: Path, flags: list[str], message: str
) -> None:
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    output = tmp_path / "out.om"
    result = run_cli(
        "--config.file", str(config), *flags, "--backfill.output", str(output), env=KEY_ENV
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"braze-exporter: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert sim.requests == []
    assert not output.exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--backfill", "7d"],  # no output
        ["--backfill", "7d", "--backfill.output", "-", "--once"],
        ["--backfill", "7d", "--backfill.output", "-", "--check-config"],
    ],
)
def test_backfill_combines_with_no_other_mode(
    sim: BrazeSimulator, tmp_path: Path, flags: list[str]
) -> None:
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    result = run_cli("--config.file", str(config), *flags, env=KEY_ENV)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert sim.requests == []


def test_an_unwritable_output_is_a_usage_error(sim: BrazeSimulator, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    result = run_cli(
        "--config.file",
        str(config),
        "--backfill",
        "7d",
        "--backfill.output",
        str(tmp_path / "missing" / "out.om"),
        env=KEY_ENV,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"braze-exporter: --backfill.output: cannot write {tmp_path / 'missing' / 'out.om'}: "
        "No such file or directory\n"
    )
    assert sim.requests == []


def test_failed_series_are_named_and_the_rest_is_written(tmp_path: Path) -> None:
    without_sessions = dataclasses.replace(
        PROD, permissions=ALL_PERMISSIONS - {"sessions.data_series"}
    )
    with BrazeSimulator((without_sessions, STAGE)) as sim:
        data = config_data(sim.url, kpis=["dau", "sessions_hourly"])
        config = write_config(tmp_path / "c.yaml", data)
        result = run_cli(
            "--config.file",
            str(config),
            "--backfill",
            "2d",
            "--backfill.output",
            "-",
            env=KEY_ENV,
        )
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if 'msg="backfill failed"' in line]
    assert len(failed) == 3  # prod's whole workspace, ios and web: hourly sessions
    assert all("workspace=prod" in line and "kpi=sessions_hourly" in line for line in failed)
    assert "403" in failed[0]
    out = result.stdout
    assert 'braze_hourly_sessions{job="braze-exporter",instance="backfill",workspace="stage"' in out
    assert (
        'braze_daily_active_users{job="braze-exporter",instance="backfill",workspace="prod"' in out
    )
    assert 'workspace="prod",app="ios"} ' in out
    assert out.endswith("# EOF\n")


def test_the_demo_backfills_every_kind_to_stdout() -> None:
    result = run_cli(
        "--demo", "--backfill", "1d", "--backfill.step", "5m", "--backfill.output", "-"
    )
    assert result.returncode == 0, result.stderr
    for kpi in SUPPORTED_KPIS.values():
        assert f"# TYPE {kpi.app_metric} gauge" in result.stdout
        assert f"# TYPE {kpi.workspace_metric} gauge" in result.stdout
    assert 'msg="backfill written"' in result.stderr


# --- Progress --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_with_the_time_left() -> None:
    clock = FakeClock(NOW)
    terminal = Terminal()
    progress = Progress(2, 4, terminal, clock=clock)
    clock.now += 1
    progress.request_made()  # at 1 s: 1 of 4 requests, 3 s left
    clock.now += 1
    progress.request_made()
    progress.series_finished()
    progress.close()
    shown = terminal.getvalue()
    assert "\r[########----------------------] 0/2 series, 1 requests, about 3s left" in shown
    assert "1/2 series, 2 requests" in shown
    assert shown.endswith("\n")


def test_without_a_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.progress")
    clock = FakeClock(NOW)
    progress = Progress(2, 3, io.StringIO(), clock=clock)
    clock.now += 1
    progress.request_made()  # 1 s: too soon for a line
    clock.now += 10
    progress.request_made()  # 11 s: a line
    progress.series_finished()
    progress.series_finished()  # the last series: always a line
    lines = [r for r in caplog.records if r.getMessage() == "backfill progress"]
    assert [(r.__dict__["series_done"], r.__dict__["requests"]) for r in lines] == [(0, 2), (2, 2)]


def test_run_backfill_reports_progress_and_writes_every_series(
    fixed_sim: BrazeSimulator, clock: FakeClock
) -> None:
    config = validate_config(
        config_data(fixed_sim.url, kpis=["mau", "sessions_hourly"]), environ=KEY_ENV
    )
    keys = {"prod": SecretStr(PROD_KEY), "stage": SecretStr(KEY_ENV["STAGE_KEY"])}

    def make_client(workspace: str, on_attempt: object) -> BrazeClient:
        return BrazeClient(
            fixed_sim.url,
            keys[workspace],
            timeout=2,
            retry=FAST,
            clock=clock,
            on_attempt=on_attempt,  # type: ignore[arg-type]
        )

    out, terminal = io.StringIO(), Terminal()
    options = Options(5 * 86400, 300, "braze-exporter", "backfill")
    assert run_backfill(config, make_client, options, out, terminal, clock=clock)
    assert "10/10 series, 15 requests" in terminal.getvalue()  # hourly: 122 hours, 2 pages
    assert len(fixed_sim.requests) == 15
    assert out.getvalue().count("# TYPE") == 5


def test_parse_options_keeps_what_it_was_given() -> None:
    assert parse_options("90d", "1m", "braze-exporter", "backfill") == Options(
        90 * 86400, 60, "braze-exporter", "backfill"
    )
    with pytest.raises(ValueError, match=r"--backfill\.instance: must be printable"):
        parse_options("1d", "1m", "j", "a\nb")


def test_workspaces_in_other_zones_page_by_their_own_days(clock: FakeClock) -> None:
    berlin = SimWorkspace("eu", PROD_KEY, PROD.apps, time_zone="Europe/Berlin")
    with BrazeSimulator((berlin,), clock=clock) as sim:
        zoned = client(sim, clock, time_zone=ZoneInfo("Europe/Berlin"))
        series = Series("eu", "ios", "app-ios", SUPPORTED_KPIS["sessions"])
        history = read_history(zoned, series, NOW - timedelta(days=120), clock=clock)
    assert history.error is None
    days = [p.start for p in history.points]
    assert len(set(days)) == len(days) and len(days) >= 120
    assert all(
        (b - a) in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
        for a, b in itertools.pairwise(days)
    )
