"""End to end: the real CLI as a subprocess against the simulator, read like Prometheus would."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import bcrypt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.kpis import SUPPORTED_KPIS
from exporter.simulator import BrazeSimulator, Fault
from tests.conftest import (
    KEY_ENV,
    PROD_KEY,
    STAGE_KEY,
    ExporterProcess,
    config_data,
    required_tool,
    run_cli,
    serving_exporter,
    wait_until,
    write_config,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Samples by name and labels, an empty label dropped as Prometheus drops it."""
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if v)): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def wait_until_ready(url: str, timeout: float = 10) -> None:
    wait_until(
        lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200,
        "/readyz to answer 200",
        timeout,
    )


def wait_for_cycles(exporter: ExporterProcess, count: int, timeout: float = 15) -> None:
    wait_until(
        lambda: exporter.stderr.count('msg="poll cycle finished"') >= count,
        f"{count} poll cycles",
        timeout,
    )


@pytest.fixture
def config_file(tmp_path: Path, sim: BrazeSimulator) -> Path:
    return write_config(tmp_path / "config.yaml", config_data(sim.url, interval="1s", timeout="1s"))


def test_serves_every_series_with_the_right_values(sim: BrazeSimulator, config_file: Path) -> None:
    with serving_exporter(config_file, KEY_ENV) as (_, url):
        wait_until_ready(url)
        response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    day = sim.newest_day()
    for workspace, key, apps in (
        ("prod", PROD_KEY, {"ios": "app-ios", "web": "app-web"}),
        ("stage", STAGE_KEY, {"ios": "app-stage"}),
    ):
        assert sample(found, "braze_workspace_monthly_active_users", workspace=workspace) == (
            sim.expected_value(key, "mau", None, day)
        )
        for app, app_id in apps.items():
            assert sample(found, "braze_monthly_active_users", workspace=workspace, app=app) == (
                sim.expected_value(key, "mau", app_id, day)
            )
            assert sample(found, "braze_app_info", workspace=workspace, app=app, app_id=app_id) == 1
            assert (
                sample(found, "braze_last_poll_success", workspace=workspace, app=app, kpi="mau")
                == 1
            )
    # The whole-workspace series carries no app label at all.
    assert not any(
        name == "braze_workspace_monthly_active_users" and "app" in dict(labels)
        for name, labels in found
    )
    assert sample(found, "braze_exporter_build_info", version=__version__) == 1
    assert (
        sample(found, "braze_api_requests_total", workspace="prod", kpi="mau", code="200")
        is not None
    )


def test_output_passes_promtool(sim: BrazeSimulator, config_file: Path) -> None:
    promtool = required_tool("promtool", "Debian package prometheus")
    sim.inject(Fault(status=500, app_id="app-web"))  # failure metrics in the output too
    with serving_exporter(config_file, KEY_ENV) as (_, url):
        wait_until_ready(url)
        text = requests.get(f"{url}/metrics", timeout=5).text
    assert "braze_last_poll_success" in text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_landing_page_and_health_endpoints(sim: BrazeSimulator, config_file: Path) -> None:
    sim.inject(Fault(delay=1.0, times=5))  # the first cycle takes a while
    with serving_exporter(config_file, KEY_ENV) as (_, url):
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        wait_until_ready(url)
        landing = requests.get(f"{url}/", timeout=5)
        assert landing.status_code == 200
        assert landing.headers["Content-Type"].startswith("text/html")
        for link in ('href="metrics"', 'href="healthz"', 'href="readyz"'):
            assert link in landing.text
        assert requests.get(f"{url}/nope", timeout=5).status_code == 404
        assert requests.post(f"{url}/metrics", timeout=5).status_code == 405


FAILURES = {
    "server error": (Fault(status=500), "500"),
    "rejected key": (Fault(status=401), "401"),
    "missing permission": (Fault(status=403, message="no kpi.mau.data_series"), "403"),
    "rate limited": (Fault(status=429, headers={"Retry-After": "3600"}), "429"),
    "timeout": (Fault(delay=5), "timeout"),
    "dropped connection": (Fault(drop_connection=True), "connection_error"),
    "non-JSON body": (Fault(body=b"<html>gateway</html>"), "200"),
    "queued": (Fault(status=202, message="queued"), "202"),
    "not success": (Fault(message="internal error"), "200"),
    "no valid point": (Fault(data=[{"time": "2026-11-27", "mau": -1}]), "200"),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_each_failure_kind_marks_only_its_series(
    sim: BrazeSimulator, tmp_path: Path, kind: str
) -> None:
    fault, status = FAILURES[kind]
    sim.inject(dataclasses.replace(fault, api_key=PROD_KEY, app_id="app-ios"))
    config = write_config(tmp_path / "c.yaml", config_data(sim.url, interval="1h", timeout="1s"))
    with serving_exporter(config, KEY_ENV) as (exporter, url):
        wait_until_ready(url, timeout=20)
        found = samples(requests.get(f"{url}/metrics", timeout=5).text)
        logged = exporter.wait_for_log(r'msg="poll failed" .*')
        assert exporter.process.poll() is None  # still serving
    assert sample(found, "braze_last_poll_success", workspace="prod", app="ios", kpi="mau") == 0
    assert sample(found, "braze_monthly_active_users", workspace="prod", app="ios") is None
    for other in ({"workspace": "prod", "app": "web"}, {"workspace": "prod"}):
        polled = sample(found, "braze_last_poll_success", kpi="mau", **other)
        # A 429 pauses the whole workspace: its other series may not have been sent yet.
        assert polled in ((1, None) if status == "429" else (1,))
    assert sample(found, "braze_last_poll_success", kpi="mau", workspace="stage", app="ios") == 1
    assert "workspace=prod app=ios kpi=mau status=" + status in logged.group(0)
    assert (
        sample(found, "braze_api_requests_total", workspace="prod", kpi="mau", code=status)
        is not None
    )


def test_a_failing_series_keeps_its_last_good_value(sim: BrazeSimulator, config_file: Path) -> None:
    with serving_exporter(config_file, KEY_ENV) as (exporter, url):
        wait_until_ready(url)
        before = samples(requests.get(f"{url}/metrics", timeout=5).text)
        sim.inject(Fault(status=503, app_id="app-web"))
        cycles = exporter.stderr.count('msg="poll cycle finished"')
        wait_for_cycles(exporter, cycles + 2)
        after = samples(requests.get(f"{url}/metrics", timeout=5).text)
    web = {"workspace": "prod", "app": "web"}
    assert (
        sample(after, "braze_monthly_active_users", **web)
        == sample(before, "braze_monthly_active_users", **web)
        is not None
    )
    assert sample(after, "braze_last_poll_success", kpi="mau", **web) == 0
    assert sample(after, "braze_last_success_timestamp_seconds", kpi="mau", **web) == sample(
        before, "braze_last_success_timestamp_seconds", kpi="mau", **web
    )


def test_rate_limited_workspace_is_left_alone_until_the_reset(
    sim: BrazeSimulator, config_file: Path
) -> None:
    reset = int(time.time()) + 3600
    sim.inject(
        Fault(
            status=429,
            api_key=PROD_KEY,
            headers={"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"},
        )
    )
    with serving_exporter(config_file, {**KEY_ENV}) as (exporter, url):
        wait_for_cycles(exporter, 4)  # interval 1 s
        found = samples(requests.get(f"{url}/metrics", timeout=5).text)
        exporter.wait_for_log(r'msg="workspace skipped: rate limited by Braze" workspace=prod')
    prod = [r for r in sim.requests if r.api_key == PROD_KEY]
    assert len(prod) <= 3  # the first cycle's requests in flight when the 429 came back
    assert all(r.status == 429 for r in prod)
    assert len([r for r in sim.requests if r.api_key == STAGE_KEY]) >= 8  # stage unaffected
    assert sample(found, "braze_api_rate_limit_reset_timestamp_seconds", workspace="prod") == reset
    assert sample(found, "braze_api_rate_limit_remaining", workspace="prod") == 0


def test_the_api_key_never_leaks(sim: BrazeSimulator, config_file: Path) -> None:
    # A Braze message that echoes the key would otherwise reach the log line.
    sim.inject(Fault(status=401, message=f"Invalid API key: {PROD_KEY}", app_id="app-ios"))
    sim.inject(Fault(status=500, app_id="app-web"))
    with serving_exporter(config_file, KEY_ENV, "--log.level", "debug") as (exporter, url):
        wait_for_cycles(exporter, 2)
        pages = [
            requests.get(f"{url}{path}", timeout=5).text
            for path in ("/metrics", "/", "/healthz", "/readyz", "/nope")
        ]
        exporter.wait_for_log("Invalid API key: <redacted>")
    for text in [*pages, exporter.stderr]:
        assert PROD_KEY not in text
        assert STAGE_KEY not in text


@pytest.mark.parametrize(
    ("sig", "fault"),
    [
        (signal.SIGTERM, Fault(delay=30)),  # a request in flight
        (signal.SIGINT, Fault(delay=30)),
        (signal.SIGTERM, Fault(status=503)),  # waiting to retry
    ],
)
def test_signals_stop_within_5_seconds_even_mid_poll(
    sim: BrazeSimulator, tmp_path: Path, sig: int, fault: Fault
) -> None:
    sim.inject(fault)
    config = write_config(tmp_path / "c.yaml", config_data(sim.url, timeout="60s"))
    with serving_exporter(config, KEY_ENV) as (exporter, _):
        wait_until(lambda: sim.requests, "the first request")
        started = time.monotonic()
        code = exporter.stop(sig)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 5
    assert "level=info logger=exporter msg=stopping signal=" + signal.Signals(sig).name in (
        exporter.stderr
    )
    assert "level=error" not in exporter.stderr
    assert "Traceback" not in exporter.stderr


def test_a_stuck_series_holds_up_neither_the_others_nor_the_schedule(
    sim: BrazeSimulator, tmp_path: Path
) -> None:
    """prod/ios gets no answer for a minute. Each cycle gives up on it by 90 % of the interval,
    marks it failed and ends, so the exporter is ready at once and the others keep updating."""
    sim.inject(Fault(delay=60, api_key=PROD_KEY, app_id="app-ios"))
    config = write_config(tmp_path / "c.yaml", config_data(sim.url, interval="1s", timeout="1s"))
    with serving_exporter(config, KEY_ENV) as (exporter, url):
        wait_until_ready(url, timeout=2.5)  # not after three timeouts and their backoff
        wait_for_cycles(exporter, 4, timeout=6)
        found = samples(requests.get(f"{url}/metrics", timeout=5).text)
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        exporter.wait_for_log(
            r'msg="poll abandoned: no answer in time" workspace=prod app=ios kpi=mau'
        )
    assert sample(found, "braze_last_poll_success", workspace="prod", app="ios", kpi="mau") == 0
    for other in (
        {"workspace": "prod", "app": "web"},
        {"workspace": "prod"},
        {"workspace": "stage", "app": "ios"},
        {"workspace": "stage"},
    ):
        assert sample(found, "braze_last_poll_success", kpi="mau", **other) == 1, other
    web = [r for r in sim.requests if r.api_key == PROD_KEY and r.params.get("app_id") == "app-web"]
    assert len(web) >= 4  # once in every cycle


@pytest.mark.parametrize(
    "sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM], ids=lambda s: s.name
)
def test_stray_signals_are_logged_and_ignored(
    sim: BrazeSimulator, tmp_path: Path, sig: signal.Signals
) -> None:
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    with serving_exporter(config, KEY_ENV) as (exporter, url):
        wait_until_ready(url)
        exporter.process.send_signal(sig)
        exporter.wait_for_log(f'level=warning .* msg="signal ignored" signal={sig.name}$')
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert exporter.stop() == 0
    assert "Traceback" not in exporter.stderr


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
@pytest.mark.parametrize("caught_by", ["main", "another thread"])
def test_a_signal_during_once_exits_at_once(
    sim: BrazeSimulator, tmp_path: Path, sig: signal.Signals, code: int, caught_by: str
) -> None:
    sim.inject(Fault(delay=60))  # every request hangs
    config = write_config(tmp_path / "c.yaml", config_data(sim.url, interval="1m", timeout="30s"))
    exporter = ExporterProcess(["--config.file", str(config), "--once"], KEY_ENV)
    wait_until(lambda: len(sim.requests) == 4, "requests for as many series as poll at once")
    started = time.monotonic()
    if caught_by == "another thread":  # a poll thread: the main thread waits for answers
        signal_a_thread_other_than_main(exporter.process.pid, sig)
    assert exporter.stop(sig, timeout=5) == code
    assert time.monotonic() - started < 2
    assert without_timestamps(exporter.lines) == [
        f'level=info logger=exporter msg="exiting at once" signal={sig.name} exit_code={code}'
    ]
    assert exporter.process.stdout is not None and exporter.process.stdout.read() == ""


def without_timestamps(lines: list[str]) -> list[str]:
    return [line.partition(" ")[2] if line.startswith("ts=") else line for line in lines]


def handles(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler of its own for `sig` (Linux: SigCgt in /proc)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("needs Linux's /proc/PID/status")
    for line in status.read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(
    sim: BrazeSimulator, tmp_path: Path
) -> None:
    """The handlers are in place before the slow imports (pydantic, requests, APScheduler):
    Ctrl-C right after that point interrupts those imports, config loading or wiring."""
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    exporter = ExporterProcess(
        ["--config.file", str(config), "--web.listen-address", "127.0.0.1:0"], KEY_ENV
    )
    try:
        pid = exporter.process.pid
        wait_until(lambda: handles(pid, signal.SIGUSR1), "the signal handlers to be in place")
    finally:
        code = exporter.stop(signal.SIGINT, timeout=5)
    assert code == 130
    assert without_timestamps(exporter.lines) == [
        'level=info logger=exporter msg="exiting at once" signal=SIGINT exit_code=130'
    ]


def signal_a_thread_other_than_main(pid: int, sig: signal.Signals) -> None:
    """What the kernel may do with any signal sent to the process: hand it to another thread."""
    tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)
    if tgkill is None:
        pytest.skip("the C library has no tgkill() (glibc has it from 2.30)")
    others = sorted(int(task) for task in os.listdir(f"/proc/{pid}/task") if int(task) != pid)
    assert tgkill(pid, others[-1], int(sig)) == 0, os.strerror(ctypes.get_errno())


def test_signals_caught_by_another_thread_are_handled(
    sim: BrazeSimulator, config_file: Path
) -> None:
    """The main thread used to wait for them without a timeout, so it never ran the handler of
    a signal caught elsewhere: SIGTERM went unanswered until a SIGKILL."""
    with serving_exporter(config_file, KEY_ENV) as (exporter, url):
        wait_until_ready(url)
        signal_a_thread_other_than_main(exporter.process.pid, signal.SIGHUP)
        exporter.wait_for_log(r'msg="config reloaded" trigger=SIGHUP', timeout=5)
        signal_a_thread_other_than_main(exporter.process.pid, signal.SIGTERM)
        assert exporter.process.wait(5) == 0
    assert "msg=stopping signal=SIGTERM" in exporter.stderr


def test_sigterm_when_idle_is_a_clean_stop(sim: BrazeSimulator, config_file: Path) -> None:
    with serving_exporter(config_file, KEY_ENV) as (exporter, url):
        wait_until_ready(url)
        assert exporter.stop() == 0
    assert "msg=stopped" in exporter.stderr
    assert "Traceback" not in exporter.stderr


def test_once_prints_the_exposition_and_exits_0(sim: BrazeSimulator, config_file: Path) -> None:
    result = run_cli("--config.file", str(config_file), "--once", env=KEY_ENV)
    assert result.returncode == 0, result.stderr
    found = samples(result.stdout)
    assert sample(found, "braze_workspace_monthly_active_users", workspace="prod") == (
        sim.expected_value(PROD_KEY, "mau", None, sim.newest_day())
    )
    assert len(sim.requests) == 5


def test_once_exits_1_when_a_series_failed(sim: BrazeSimulator, config_file: Path) -> None:
    sim.inject(Fault(status=400, message="unknown app", app_id="app-web"))
    result = run_cli("--config.file", str(config_file), "--once", env=KEY_ENV)
    assert result.returncode == 1
    assert (
        sample(
            samples(result.stdout),
            "braze_last_poll_success",
            workspace="prod",
            app="web",
            kpi="mau",
        )
        == 0
    )


def test_check_config(config_file: Path) -> None:
    result = run_cli("--config.file", str(config_file), "--check-config", env=KEY_ENV)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"{config_file}: ok (2 workspaces, 5 series)\n"
        "planned Braze requests per hour, one per series and cycle (every 1s), "
        "retries not counted:\n"
        "  prod: 10800 (3 series, 3600 cycles per hour)\n"
        "  stage: 7200 (2 series, 3600 cycles per hour)\n"
    )


def test_the_example_config_checks_out_and_plans_its_requests() -> None:
    example = Path(__file__).resolve().parent.parent / "config.yaml"
    result = run_cli(
        "--config.file", str(example), "--check-config", env={"BRAZE_API_KEY": "k" * 36}
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"{example}: ok (1 workspace, 18 series)",
        "planned Braze requests per hour, one per series and cycle (every 15m), "
        "retries not counted:",
        "  production: 72 (18 series, 4 cycles per hour)",
    ]


def test_check_config_plans_large_numbers_without_exponents(tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:1", interval="1s", timeout="1s", kpis=["mau", "dau"])
    workspaces = cast(list[dict[str, object]], data["workspaces"])
    workspaces[0]["apps"] = [{"name": f"app{n}", "id": f"id-{n}"} for n in range(149)]
    config = write_config(tmp_path / "c.yaml", data)
    result = run_cli("--config.file", str(config), "--check-config", env=KEY_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "  prod: 1080000 (300 series, 3600 cycles per hour)"


def test_check_config_plans_requests_per_kind_and_interval(tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:1", interval="7m", kpis=["mau", "sessions_hourly"])
    config = write_config(tmp_path / "c.yaml", data)
    result = run_cli("--config.file", str(config), "--check-config", env=KEY_ENV)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[1:] == [
        "planned Braze requests per hour, one per series and cycle (every 7m), "
        "retries not counted:",
        "  prod: 51.4 (6 series, 8.57 cycles per hour)",
        "  stage: 34.3 (4 series, 8.57 cycles per hour)",
    ]


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "poll: {interval: 0s, lenght: 3}\nworkspaces:\n"
        "  - {name: a, instance: US-01, api_key_env: NOT_SET_ANYWHERE}\n"
    )
    result = run_cli("--config.file", str(path), "--check-config")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"braze-exporter: {path}: 3 problems:\n"
        "  poll.interval: must be greater than 0, got 0\n"
        "  poll.lenght: unknown key (did you mean 'length'?)\n"
        "  workspaces[0].api_key_env: environment variable NOT_SET_ANYWHERE is not set or empty\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--config.file", "/nonexistent.yaml"],
            "braze-exporter: /nonexistent.yaml: 1 problem:\n  cannot read the config file",
        ),
        (["--web.listen-address", "nonsense"], "invalid listen address 'nonsense'"),
        (["--web.listen-address", ":99999"], "port must be 0..65535"),
        (["--log.level", "loud"], "invalid choice: 'loud'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--web.telemetry-path", "metrics"], "--web.telemetry-path: 'metrics' must be a path"),
        (["--web.telemetry-path", "/healthz"], "other than /, /healthz, /readyz, /-/reload"),
        (["--web.max-requests", "-1"], "--web.max-requests: -1 must be 0 (no limit) or more"),
        (
            ["--web.config.file", "/nonexistent-web.yml"],
            "braze-exporter: /nonexistent-web.yml: 1 problem:",
        ),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    config_file: Path, args: list[str], message: str
) -> None:
    result = run_cli("--config.file", str(config_file), *args, env=KEY_ENV)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_a_runtime_failure(config_file: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "--config.file",
            str(config_file),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            env=KEY_ENV,
        )
    assert result.returncode == 1
    assert 'msg="cannot listen"' in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_polls_every_kind_needs_no_key_and_passes_promtool(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if "BRAZE" not in k},
    )
    assert result.returncode == 0, result.stderr
    found = samples(result.stdout)
    # All six kinds, for every app and whole workspace: 36 series, one request each.
    for kind in SUPPORTED_KPIS.values():
        assert sample(found, kind.app_metric, workspace="production", app="ios"), kind.name
        assert sample(found, kind.workspace_metric, workspace="staging"), kind.name
    requests_sent = sum(
        value for (name, _), value in found.items() if name == "braze_api_requests_total"
    )
    assert requests_sent == 36
    assert 'msg="poll cycle finished"' in result.stderr and "succeeded=36 " in result.stderr
    promtool = required_tool("promtool", "Debian package prometheus")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=result.stdout, capture_output=True, text=True
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_demo_serves_on_loopback(tmp_path: Path) -> None:
    exporter = ExporterProcess(["--demo", "--web.listen-address", "127.0.0.1:0"])
    try:
        port = exporter.wait_for_log(r"msg=listening address=127\.0\.0\.1:(\d+)").group(1)
        wait_until_ready(f"http://127.0.0.1:{port}")
        assert (
            "braze_monthly_active_users"
            in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        )
    finally:
        assert exporter.stop() == 0


def test_json_logs(config_file: Path) -> None:
    result = run_cli(
        "--config.file", str(config_file), "--once", "--log.format", "json", env=KEY_ENV
    )
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert {e["msg"] for e in events} == {"poll cycle finished"}
    assert events[0]["succeeded"] == 5 and events[0]["level"] == "info"


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"braze-exporter {__version__}\n")


def test_check_config_checks_the_web_config(config_file: Path, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    result = run_cli(
        "--config.file",
        str(config_file),
        "--web.config.file",
        str(web),
        "--check-config",
        env=KEY_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert f"{web}: ok (no TLS, 1 basic auth user)\n" in result.stdout


def test_check_config_lists_the_problems_of_both_files(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("poll:\n  interval: soon\nworkspaces: []\n")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plain-text-password\ntls_server_confg: {}\n")
    result = run_cli("--config.file", str(config), "--web.config.file", str(web), "--check-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for expected in (
        f"{config}: poll.interval",
        f"{web}: basic_auth_users.alice",
        "tls_server_confg",
    ):
        assert expected in result.stderr
    assert "plain-text-password" not in result.stderr


def test_exporter_metrics_are_on_by_default(sim: BrazeSimulator, config_file: Path) -> None:
    with serving_exporter(config_file, KEY_ENV) as (_, url):
        text = requests.get(f"{url}/metrics", timeout=5).text
    for name in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_objects_collected",
    ):
        assert f"\n{name}" in text
    with serving_exporter(config_file, KEY_ENV, "--web.disable-exporter-metrics") as (_, url):
        text = requests.get(f"{url}/metrics", timeout=5).text
    assert "process_" not in text
    assert "python_" not in text
    assert "braze_exporter_build_info" in text


def test_sighup_outside_serving_is_ignored(sim: BrazeSimulator, tmp_path: Path) -> None:
    sim.inject(Fault(delay=1.0, times=5))
    config = write_config(tmp_path / "c.yaml", config_data(sim.url))
    exporter = ExporterProcess(["--config.file", str(config), "--once"], KEY_ENV)
    wait_until(lambda: sim.requests, "the first request")
    assert exporter.stop(signal.SIGHUP, timeout=10) == 0  # ignored: --once runs to its end
    assert 'msg="signal ignored" signal=SIGHUP' in exporter.stderr
