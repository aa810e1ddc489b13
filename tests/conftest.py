"""Shared fixtures: a Braze simulator with two workspaces, and config data pointing at it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
import yaml

from exporter.simulator import BrazeSimulator, SimApp, SimWorkspace
from exporter.values import KpiPoint

PROD_KEY = "prod-key-0123456789abcdef"
STAGE_KEY = "stage-key-fedcba9876543210"
PROD = SimWorkspace(
    "prod",
    PROD_KEY,
    apps=(SimApp("app-ios", "ios", 1_000_000), SimApp("app-web", "web", 300_000)),
)
STAGE = SimWorkspace("stage", STAGE_KEY, apps=(SimApp("app-stage", "ios", 5_000),))
KEY_ENV = {"PROD_KEY": PROD_KEY, "STAGE_KEY": STAGE_KEY}


@pytest.fixture
def sim() -> Iterator[BrazeSimulator]:
    with BrazeSimulator((PROD, STAGE)) as simulator:
        yield simulator


class FakeClock:
    """A wall clock that tests set: `now` is Unix time."""

    def __init__(self, moment: datetime | float = 1_800_000_000.0) -> None:
        self.now = moment.timestamp() if isinstance(moment, datetime) else float(moment)

    def __call__(self) -> float:
        return self.now


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, run to its end, with the environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def day_point(day: date, value: int, zone: tzinfo = timezone.utc) -> KpiPoint:
    """The point of a local day: local midnight to the next one, written out independently of
    exporter.periods (an oracle, not a copy)."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return KpiPoint(start.astimezone(timezone.utc), end.astimezone(timezone.utc), value)


def hour_point(start: datetime, value: int) -> KpiPoint:
    """The point of the hour starting at the aware datetime `start`."""
    utc = start.astimezone(timezone.utc)
    return KpiPoint(utc, utc + timedelta(hours=1), value)


REPO = Path(__file__).resolve().parent.parent
RULES_FILE = REPO / "monitoring" / "braze-exporter.rules.yml"
DASHBOARD_FILE = REPO / "monitoring" / "braze-exporter.dashboard.json"


def required_tool(name: str, package: str) -> str:
    """The path of an external tool; skip without it, except under CI, which installs it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI (.ci/run installs {package})")
        pytest.skip(f"{name} not installed ({package})")
    return path


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Poll `condition` until it is true; fail the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def config_data(url: str, **poll: object) -> dict[str, object]:
    """Config for both simulator workspaces (keys from KEY_ENV), with poll overrides."""
    return {
        "poll": {"interval": "1h", "timeout": "2s", **poll},
        "workspaces": [
            {
                "name": "prod",
                "url": url,
                "api_key_env": "PROD_KEY",
                "apps": [{"name": "ios", "id": "app-ios"}, {"name": "web", "id": "app-web"}],
            },
            {
                "name": "stage",
                "url": url,
                "api_key_env": "STAGE_KEY",
                "apps": [{"name": "ios", "id": "app-stage"}],
            },
        ],
    }


class ExporterProcess:
    """The real CLI as a subprocess, its stderr collected line by line as it runs."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The first stderr line matching `pattern`, waiting for it to be written."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"no log line matches {pattern!r}; got:\n" + self.stderr)
                self._changed.wait(remaining)

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # where each thread is, from faulthandler
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            self._reader.join(timeout=5)
            raise AssertionError(f"no exit {timeout:g}s after {sig!r}:\n{self.stderr}") from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=5)


@contextmanager
def serving_exporter(
    config_path: Path, env: Mapping[str, str] | None = None, *extra_args: str
) -> Iterator[tuple[ExporterProcess, str]]:
    """Run the exporter on a free loopback port; yield it and its base URL once it listens."""
    exporter = ExporterProcess(
        ["--config.file", str(config_path), "--web.listen-address", "127.0.0.1:0", *extra_args],
        env,
    )
    try:
        port = exporter.wait_for_log(r"msg=listening address=127\.0\.0\.1:(\d+)").group(1)
        yield exporter, f"http://127.0.0.1:{port}"
    finally:
        exporter.stop()


def write_config(path: Path, data: Mapping[str, object]) -> Path:
    path.write_text(yaml.safe_dump(dict(data)))
    return path
