"""The child processes of bench/serving.py, from the parent's side: the Braze stand-in, the
exporter's CLI and the bare prometheus_client server, each stopped when `stack` closes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml
from load import HOST, BenchError, first_answer, get_text
from standin import API_KEY, APP_COUNT, WORKSPACE_NAME, bench_apps

BENCH = Path(__file__).resolve().parent
KPIS = ("mau", "dau", "new_users", "uninstalls", "sessions")
SERIES = len(KPIS) * (APP_COUNT + 1)
KEY_ENV = "BENCH_BRAZE_KEY"
STOP_TIMEOUT = 5.0
LAUNCH_TIMEOUT = 30.0
LAUNCH_POLL_EVERY = 0.005
NEXT_POLL_ON_STATUS_PAGE = re.compile(r'Next poll cycle</dt>\s*<dd><time datetime="([^"]+)"')


class StandIn:
    """bench/standin.py in a child process, asked over its stdin."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self._child = child
        self.url = self._read_line()

    def count(self) -> int:
        """Requests the stand-in has received so far."""
        assert self._child.stdin is not None
        self._child.stdin.write("count\n")
        self._child.stdin.flush()
        return int(self._read_line())

    def _read_line(self) -> str:
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            raise BenchError("the Braze stand-in exited")
        return line.strip()


@dataclass(frozen=True)
class Exporter:
    child: subprocess.Popen[bytes]
    port: int
    log: Path  # its stderr

    def alive(self) -> bool:
        return self.child.poll() is None

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.child.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def exit_note(self) -> str:
        """Why it exited (its last line on stderr), or "" while it runs."""
        if self.alive():
            return ""
        lines = self.logged_lines() or ["(nothing logged)"]
        return f"; the exporter exited with {self.child.returncode}: {lines[-1][:200]}"

    def logged_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def planned_cycle(self) -> float | None:
        """Unix time of the next poll cycle on the status page, to the second rounded down;
        None if the page shows none."""
        found = NEXT_POLL_ON_STATUS_PAGE.search(get_text(self.port, "/"))
        if found is None:
            return None
        return datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()


def stop_child(child: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()  # the stand-in and the baseline end with their stdin
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def start_script(stack: contextlib.ExitStack, script: str, *args: str) -> subprocess.Popen[str]:
    """A script of bench/ in a child process with the same Python, talking over pipes."""
    child = subprocess.Popen(  # noqa: S603 (our own script, arguments built here)
        [sys.executable, str(BENCH / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.callback(stop_child, child)
    return child


def start_standin(stack: contextlib.ExitStack, latency: float, ca_file: Path) -> StandIn:
    """The stand-in, over HTTPS with a certificate of the CA it writes to `ca_file`."""
    return StandIn(start_script(stack, "standin.py", f"--latency={latency}", f"--tls-ca={ca_file}"))


def image_environment() -> dict[str, str]:
    """The image's environment for the exporter's memory: MALLOC_ARENA_MAX, from the
    Dockerfile, so that the bench measures what the image runs."""
    dockerfile = (BENCH.parent / "Dockerfile").read_text()
    found = re.search(r"^\s*MALLOC_ARENA_MAX=(\d+)", dockerfile, re.MULTILINE)
    return {} if found is None else {"MALLOC_ARENA_MAX": found.group(1)}


SERVING_MODULES = (  # what `braze-exporter` has imported once it serves
    "exporter.cli",
    "exporter.wiring",
    "exporter.poller",
    "exporter.exposition",
    "exporter.exposition_cache",
    "exporter.reload",
    "exporter.routes",
    "exporter.server",
    "exporter.tls_watch",
    "exporter.status_page",
    "exporter.webconfig",
    "prometheus_client.process_collector",
)
IMPORT_FLOOR = (
    "import importlib, sys\n"
    "for name in sys.argv[1:]: importlib.import_module(name)\n"
    "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))"
)


def import_floor_bytes(environment: dict[str, str]) -> int:
    """VmRSS of a Python process that has imported the modules the exporter serves with, and
    done nothing else: the floor under the exporter's memory."""
    done = subprocess.run(  # noqa: S603 (our own code, arguments built here)
        [sys.executable, "-c", IMPORT_FLOOR, *SERVING_MODULES],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **environment},
    )
    return int(done.stdout.strip()) * 1024


def start_baseline(stack: contextlib.ExitStack, exposition: Path) -> int:
    """The port of a bare prometheus_client server serving the families in `exposition`."""
    child = start_script(stack, "baseline.py", str(exposition))
    assert child.stdout is not None
    port = child.stdout.readline().strip()
    if not port.isdigit():
        raise BenchError("the bare prometheus_client server did not start")
    return int(port)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def exporter_config(url: str, interval: int, concurrency: int) -> dict[str, object]:
    apps = [{"name": app.name, "id": app.app_id} for app in bench_apps()]
    return {
        "poll": {
            "interval": f"{interval}s",
            "timeout": "10s",
            "length": 3,
            "concurrency": concurrency,
            "kpis": list(KPIS),
        },
        "workspaces": [
            {
                "name": WORKSPACE_NAME,
                "url": url,
                "api_key_env": KEY_ENV,
                "time_zone": "UTC",
                "apps": apps,
            }
        ],
    }


def launch_exporter(
    stack: contextlib.ExitStack,
    folder: Path,
    config: dict[str, object],
    environment: dict[str, str],
) -> tuple[Exporter, float]:
    """The exporter's CLI running `config` with `environment` added to ours, and the seconds
    from Popen to its first 200 on /metrics."""
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [str(Path(sys.executable).with_name("braze-exporter"))]
    command += ["--config.file", str(config_file), "--web.listen-address", f"{HOST}:{port}"]
    command += ["--log.level", "warning"]
    log = folder / "exporter.log"
    with log.open("wb") as stderr:
        launched = time.monotonic()
        child = subprocess.Popen(  # noqa: S603 (our own CLI, arguments built here)
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **environment, KEY_ENV: API_KEY},
        )
    stack.callback(stop_child, child)
    exporter = Exporter(child, port, log)
    try:
        answered = first_answer(port, exporter.alive, LAUNCH_TIMEOUT, LAUNCH_POLL_EVERY)
    except BenchError as error:
        raise BenchError(f"{error}{exporter.exit_note()}") from None
    return exporter, answered - launched
