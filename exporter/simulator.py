"""A stand-in for Braze's four KPI data series endpoints, on a loopback HTTP server.

Faithful to Braze's reference: bearer key per workspace and its permissions, parameter
validation, one point per day up to the day before `ending_at`, one rate-limit bucket per
workspace reset on the clock hour. Values are deterministic (`expected_value`), and faults
(errors, odd bodies, delays, dropped connections) can be injected. Used by the tests and
by `--demo`; runs alone with `python -m exporter.simulator --listen 127.0.0.1:8080`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias

from exporter.server import format_listen_address, parse_listen_address

KPI_VALUE_KEYS: dict[str, str] = {kpi: kpi for kpi in ("mau", "dau", "new_users", "uninstalls")}
ALL_PERMISSIONS: frozenset[str] = frozenset(f"kpi.{kpi}.data_series" for kpi in KPI_VALUE_KEYS)
ANY = "*"

_UTC = datetime.timezone.utc
_MAX_LENGTH = 100
_SECONDS_PER_HOUR = 3600
_TIME_FORMATS = ("date", "datetime")

# The value model: an app's KPI is a share of its MAU, on a slow trend, with a weekly rhythm
# and a little noise. Users overlap between apps, so a workspace counts fewer than its sum.
_TREND_EPOCH = datetime.date(2026, 1, 1)  # the day an app's MAU equals its base_mau
_DAILY_GROWTH = 0.0005
_SHARE_OF_MAU = {"mau": 1.0, "dau": 0.20, "new_users": 0.01, "uninstalls": 0.002}
_WEEKLY_SWING = {"mau": 0.015, "dau": 0.06, "new_users": 0.08, "uninstalls": 0.05}
_NOISE = 0.004
_WORKSPACE_OVERLAP = 0.85

_DEFAULT_MESSAGES = {202: "queued", 401: "Invalid API key", 429: "Rate limit exceeded"}


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
    rate_limit: int = 250_000  # requests per clock hour, shared by the four endpoints
    permissions: frozenset[str] = ALL_PERMISSIONS  # a KPI whose permission is missing: 403


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or on top of) the normal answer, for requests that match.

    Precedence: `body`, then `data`, then `status`, then `message` alone; with none of them
    the normal answer is sent (after `delay`, with `headers`). Faults apply only to
    authenticated requests that the rate limit let through.
    """

    status: int | None = None  # this status, with {"message": message or a Braze-like default}
    message: str | None = None  # the JSON "message" (alone: a 200 without data, e.g. "queued")
    body: bytes | None = None  # raw body sent as is (status or 200)
    data: list[dict[str, object]] | None = None  # 200 {"message": "success", "data": <this>}
    delay: float = 0.0  # seconds to wait before answering
    drop_connection: bool = False  # close the socket without any answer
    headers: dict[str, str] | None = None  # extra or overriding headers ("" sends it empty)
    times: int | None = None  # apply to the next N matching requests; None = until cleared
    kpi: str = ANY
    app_id: str | None = ANY  # None = only whole-workspace requests (no app_id)
    api_key: str = ANY


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    params: dict[str, str]
    api_key: str | None  # None if the Authorization header was absent or malformed
    status: int  # 0 for a dropped connection
    time: float  # clock() when received


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    delay: float = 0.0
    drop: bool = False


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int | None


@dataclass
class _Bucket:
    hour: int  # clock hours since the epoch
    remaining: int


class _BadRequest(ValueError):
    """A request parameter Braze would refuse with a 400."""


def _app_value(app: SimApp, kpi: str, day: datetime.date) -> int:
    """The value of one KPI of one app on one day."""
    trend = max(0.1, 1 + _DAILY_GROWTH * (day - _TREND_EPOCH).days)
    weekly = 1 + _WEEKLY_SWING[kpi] * math.sin(2 * math.pi * day.weekday() / 7)
    noise = 1 + _NOISE * _stable_noise(app.app_id, kpi, day)
    return max(0, round(app.base_mau * _SHARE_OF_MAU[kpi] * trend * weekly * noise))


def _stable_noise(app_id: str, kpi: str, day: datetime.date) -> float:
    """A number in [-1, 1] that is the same in every process (unlike the built-in hash())."""
    digest = hashlib.blake2b(f"{app_id}|{kpi}|{day}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 0xFFFF_FFFF * 2 - 1


def _workspace_value(workspace: SimWorkspace, kpi: str, day: datetime.date) -> int:
    return round(_WORKSPACE_OVERLAP * sum(_app_value(app, kpi, day) for app in workspace.apps))


class BrazeSimulator:
    """Braze's KPI endpoints for `workspaces`, served from a daemon thread between start/stop.

    Thread-safe: tests inject faults and read recorded requests while handler threads answer.
    """

    def __init__(
        self,
        workspaces: Sequence[SimWorkspace],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        time_format: str = "date",
        lowercase_headers: bool = False,
    ) -> None:
        if time_format not in _TIME_FORMATS:
            raise ValueError(f"time_format must be one of {_TIME_FORMATS}, not {time_format!r}")
        self._workspaces = {workspace.api_key: workspace for workspace in workspaces}
        if len(self._workspaces) != len(workspaces):
            raise ValueError("two workspaces share an api_key")
        self._host = host
        self._port = port
        self._clock = clock
        self._time_format = time_format
        self._lowercase_headers = lowercase_headers
        self._lock = threading.Lock()
        self._faults: list[_ActiveFault] = []
        self._requests: list[RecordedRequest] = []
        self._buckets: dict[str, _Bucket] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BrazeSimulator:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a simulator can be started once")
        self._server = _Server(self._host, self._port, self._answer, self._stopping)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits up to this long for the loop
            name="braze-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()  # delayed answers give up at once
        self._server.shutdown()
        self._server.close_open_connections()  # idle keep-alive readers wake up and end
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> BrazeSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{format_listen_address(str(host), int(port))}"

    def inject(self, fault: Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("Fault.times must be at least 1 (or None: until cleared)")
        with self._lock:
            self._faults.append(_ActiveFault(fault, fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def expected_value(self, api_key: str, kpi: str, app_id: str | None, day: datetime.date) -> int:
        workspace = self._workspace(api_key)
        if kpi not in KPI_VALUE_KEYS:
            raise ValueError(f"unknown kpi {kpi!r}")
        if app_id is None:
            return _workspace_value(workspace, kpi, day)
        return _app_value(_app(workspace, app_id), kpi, day)

    def newest_day(self, ending_at: datetime.datetime | None = None) -> datetime.date:
        moment = ending_at or datetime.datetime.fromtimestamp(self._clock(), _UTC)
        if moment.tzinfo is None:  # naive: taken as UTC
            moment = moment.replace(tzinfo=_UTC)
        # MAU is computed nightly, so the newest point is the (UTC) day before ending_at.
        return moment.astimezone(_UTC).date() - datetime.timedelta(days=1)

    def set_rate_limit_remaining(self, api_key: str, remaining: int) -> None:
        workspace = self._workspace(api_key)
        with self._lock:
            self._bucket(workspace, self._clock()).remaining = remaining

    def _workspace(self, api_key: str) -> SimWorkspace:
        if api_key not in self._workspaces:
            raise ValueError("no workspace has this api_key")
        return self._workspaces[api_key]

    def _answer(self, method: str, target: str, authorization: str | None) -> _Reply:
        """Decide the answer to one request and record it. Called from handler threads."""
        received = self._clock()
        url = urllib.parse.urlsplit(target)
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        api_key = _bearer_key(authorization)
        with self._lock:
            reply = self._decide(method, url.path, params, api_key, received)
            status = 0 if reply.drop else reply.status
            self._requests.append(RecordedRequest(url.path, params, api_key, status, received))
        return reply

    def _decide(
        self, method: str, path: str, params: dict[str, str], api_key: str | None, now: float
    ) -> _Reply:
        # The key first (a 401 belongs to no workspace, so no rate-limit headers), then the
        # workspace's bucket, then faults, then what Braze itself would answer.
        workspace = self._workspaces.get(api_key) if api_key else None
        if workspace is None:
            return _json_reply(401, {"message": _DEFAULT_MESSAGES[401]})
        bucket = self._bucket(workspace, now)
        allowed = bucket.remaining > 0
        bucket.remaining = max(0, bucket.remaining - 1)
        limit_headers = self._rate_limit_headers(workspace.rate_limit, bucket)
        if not allowed:
            return _json_reply(429, {"message": _DEFAULT_MESSAGES[429]}, limit_headers)
        kpi = _kpi_of(path)
        fault = self._take_fault(kpi, params.get("app_id"), workspace.api_key) or Fault()
        reply = _fault_reply(fault) or self._serve(workspace, method, kpi, params, now)
        reply = _with_headers(reply, limit_headers, fault.headers or {})
        return dataclasses.replace(reply, delay=fault.delay, drop=fault.drop_connection)

    def _bucket(self, workspace: SimWorkspace, now: float) -> _Bucket:
        hour = int(now // _SECONDS_PER_HOUR)
        bucket = self._buckets.get(workspace.api_key)
        if bucket is None or bucket.hour != hour:
            bucket = self._buckets[workspace.api_key] = _Bucket(hour, workspace.rate_limit)
        return bucket

    def _rate_limit_headers(self, limit: int, bucket: _Bucket) -> dict[str, str]:
        reset = (bucket.hour + 1) * _SECONDS_PER_HOUR
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(bucket.remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if self._lowercase_headers:  # as they arrive over HTTP/2
            return {name.lower(): value for name, value in headers.items()}
        return headers

    def _take_fault(self, kpi: str | None, app_id: str | None, api_key: str) -> Fault | None:
        for active in self._faults:
            if _matches(active.fault, kpi, app_id, api_key):
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining <= 0:
                        self._faults.remove(active)
                return active.fault
        return None

    def _serve(
        self,
        workspace: SimWorkspace,
        method: str,
        kpi: str | None,
        params: dict[str, str],
        now: float,
    ) -> _Reply:
        """The answer Braze itself would give to an authenticated, unlimited request."""
        if method != "GET":
            return _json_reply(405, {"message": "Method Not Allowed"}, {"Allow": "GET"})
        if kpi is None:
            return _json_reply(404, {"message": "Not Found"})
        permission = f"kpi.{kpi}.data_series"
        if permission not in workspace.permissions:
            message = f"This API key does not have the {permission} permission"
            return _json_reply(403, {"message": message})
        try:
            length = _parse_length(params.get("length"))
            ending_at = _parse_ending_at(params.get("ending_at"), now)
            app_id = params.get("app_id")
            if app_id is not None:
                _app(workspace, app_id)
        except _BadRequest as error:
            return _json_reply(400, {"message": str(error)})
        newest = self.newest_day(ending_at)
        days = [newest - datetime.timedelta(days=back) for back in reversed(range(length))]
        data = [
            {
                "time": self._format_day(day),
                KPI_VALUE_KEYS[kpi]: self.expected_value(workspace.api_key, kpi, app_id, day),
            }
            for day in days
        ]
        return _json_reply(200, {"message": "success", "data": data})

    def _format_day(self, day: datetime.date) -> str:
        if self._time_format == "datetime":
            return f"{day.isoformat()}T00:00:00.000Z"
        return day.isoformat()


def _app(workspace: SimWorkspace, app_id: str) -> SimApp:
    for app in workspace.apps:
        if app.app_id == app_id:
            return app
    raise _BadRequest("app_id is not an app of this workspace")


def _bearer_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def _kpi_of(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) == 4 and parts[:2] == ["", "kpi"] and parts[3] == "data_series":
        return parts[2] if parts[2] in KPI_VALUE_KEYS else None
    return None


def _parse_length(raw: str | None) -> int:
    if raw is None:
        raise _BadRequest("length is required")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= _MAX_LENGTH):
        raise _BadRequest(f"length must be an integer between 1 and {_MAX_LENGTH}")
    return int(raw)


def _parse_ending_at(raw: str | None, now: float) -> datetime.datetime:
    if raw is None:
        return datetime.datetime.fromtimestamp(now, _UTC)
    # Python 3.10's fromisoformat() does not know the "Z" suffix.
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _BadRequest("ending_at must be an ISO-8601 datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC)


def _matches(fault: Fault, kpi: str | None, app_id: str | None, api_key: str) -> bool:
    return (
        fault.kpi in (ANY, kpi)
        and fault.app_id in (ANY, app_id)
        and fault.api_key in (ANY, api_key)
    )


def _fault_reply(fault: Fault) -> _Reply | None:
    """The answer a fault puts in place of the normal one, or None to keep the normal one."""
    if fault.body is not None:
        return _Reply(fault.status or 200, fault.body, {"Content-Type": "application/json"})
    if fault.data is not None:
        payload = {"message": fault.message or "success", "data": fault.data}
        return _json_reply(fault.status or 200, payload)
    if fault.status is not None:
        message = fault.message or _default_message(fault.status)
        return _json_reply(fault.status, {"message": message})
    if fault.message is not None:
        return _json_reply(200, {"message": fault.message})
    return None


def _default_message(status: int) -> str:
    try:
        return _DEFAULT_MESSAGES.get(status) or HTTPStatus(status).phrase
    except ValueError:  # a status the stdlib does not name
        return "Error"


def _json_reply(
    status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> _Reply:
    body = json.dumps(payload, default=str).encode()
    return _with_headers(_Reply(status, body, {"Content-Type": "application/json"}), headers or {})


def _with_headers(reply: _Reply, *layers: Mapping[str, str]) -> _Reply:
    """`reply` with more headers; a later one replaces an earlier one of any letter case."""
    merged = {name.lower(): (name, value) for name, value in reply.headers.items()}
    for layer in layers:
        merged.update({name.lower(): (name, value) for name, value in layer.items()})
    return dataclasses.replace(reply, headers=dict(merged.values()))


_Request: TypeAlias = "socket.socket | tuple[bytes, socket.socket]"  # as socketserver has it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() ends open connections itself; never wait on keep-alives

    def __init__(
        self,
        host: str,
        port: int,
        answer: Callable[[str, str, str | None], _Reply],
        stopping: threading.Event,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.answer = answer
        self.stopping = stopping
        self._open_connections: set[_Request] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also looks up the host's FQDN, which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: _Request, client_address: Any) -> None:
        # Tracked before its thread starts, so that stop() can end every open connection.
        with self._connections_lock:
            self._open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        with self._connections_lock:
            self._open_connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = [c for c in self._open_connections if isinstance(c, socket.socket)]
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: _Request, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every answer carries a Content-Length
    server_version = "BrazeSimulator"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._discard_request_body()
        reply = self.server.answer(self.command, self.path, self.headers.get("Authorization"))
        if reply.delay > 0 and self.server.stopping.wait(reply.delay):
            reply = dataclasses.replace(reply, drop=True)  # stopping: give up on the answer
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _discard_request_body(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isascii() and length.isdigit():
            self.rfile.read(int(length))
        else:  # unknown framing: the rest of the stream cannot be trusted
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the tests and the demo have no use for an access log."""


DEMO_WORKSPACES: tuple[SimWorkspace, ...] = (
    SimWorkspace(
        name="production",
        api_key="demo-production-key",
        apps=(
            SimApp("11111111-1111-4111-8111-111111111111", "ios", 1_200_000),
            SimApp("22222222-2222-4222-8222-222222222222", "android", 950_000),
            SimApp("33333333-3333-4333-8333-333333333333", "web", 400_000),
        ),
    ),
    SimWorkspace(
        name="staging",
        api_key="demo-staging-key",
        apps=(SimApp("44444444-4444-4444-8444-444444444444", "ios", 3_000),),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a Braze KPI API stand-in.")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    args = parser.parse_args(argv)
    try:
        host, port = parse_listen_address(args.listen)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # wherever the signal lands, stop cleanly
        signal.signal(signum, lambda *_: stop.set())
    with BrazeSimulator(DEMO_WORKSPACES, host=host or "127.0.0.1", port=port) as simulator:
        print(f"Braze simulator listening on {simulator.url}", flush=True)
        for workspace in DEMO_WORKSPACES:
            print(f"  workspace {workspace.name}: api key {workspace.api_key}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
