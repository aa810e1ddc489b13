"""BrazeSimulator: the public face of the simulator, and the decisions of each request.

A request is decided in the order Braze would meet it: the key (a 401 belongs to no
workspace, so it carries no rate-limit headers), the workspace's rate-limit bucket, then
any injected fault, then Braze's own answer (`endpoints`).
"""

from __future__ import annotations

import dataclasses
import datetime
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.server import format_listen_address
from exporter.simulator import endpoints
from exporter.simulator.faults import Fault, FaultQueue
from exporter.simulator.httpd import SimulatorHTTPServer
from exporter.simulator.kinds import kind_named, kind_of
from exporter.simulator.periods import (
    TIME_FORMATS,
    UTC,
    hour_containing,
    previous_hour,
)
from exporter.simulator.replies import Reply, error_reply, with_headers
from exporter.simulator.values import complete_value
from exporter.simulator.workspaces import SimWorkspace, zone_of

_SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    params: dict[str, str]
    api_key: str | None  # None if the Authorization header was absent or malformed
    status: int  # 0 for a dropped connection
    time: float  # clock() when received


@dataclass
class _Bucket:
    hour: int  # clock hours since the epoch
    remaining: int


class BrazeSimulator:
    """Braze's data series endpoints for `workspaces`, served from a daemon thread between
    start() and stop().

    `time_format` chooses how points write their `time`:
    - "date": days "2026-11-27"; hours "2026-11-27T13:00:00-05:00" ("Z" at offset zero);
    - "datetime": days as their local midnight, "2026-11-27T00:00:00.000-05:00"; hours
      as in "date";
    - "naive": days "2026-11-27"; hours as local wall-clock time "2026-11-27T13:00:00",
      so a fall-back's repeated hour appears twice with the same text.

    With `tls` (a server context), it serves HTTPS, as Braze does.

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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if time_format not in TIME_FORMATS:
            raise ValueError(f"time_format must be one of {TIME_FORMATS}, not {time_format!r}")
        self._workspaces = {workspace.api_key: workspace for workspace in workspaces}
        if len(self._workspaces) != len(workspaces):
            raise ValueError("two workspaces share an api_key")
        for workspace in workspaces:
            zone_of(workspace)  # an unknown zone fails here rather than in a handler thread
        self._host = host
        self._port = port
        self._clock = clock
        self._time_format = time_format
        self._lowercase_headers = lowercase_headers
        self._tls = tls
        self._lock = threading.Lock()
        self._faults = FaultQueue()
        self._requests: list[RecordedRequest] = []
        self._buckets: dict[str, _Bucket] = {}
        self._stopping = threading.Event()
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BrazeSimulator:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a simulator can be started once")
        self._server = SimulatorHTTPServer(
            self._host, self._port, self._answer, self._stopping, self._tls
        )
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
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{format_listen_address(str(host), int(port))}"

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.add(fault)

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

    def rotate_key(self, old: str, new: str) -> None:
        """Braze's key rotation: the workspace answers to `new` from now on; `old` gets 401."""
        with self._lock:
            if new in self._workspaces:
                raise ValueError("another workspace has this api_key")
            workspace = self._workspaces.pop(old)
            self._workspaces[new] = dataclasses.replace(workspace, api_key=new)

    def set_rate_limit_remaining(self, api_key: str, remaining: int) -> None:
        workspace = self._workspace(api_key)
        with self._lock:
            self._bucket(workspace, self._clock()).remaining = remaining

    def expected_value(
        self,
        api_key: str,
        kind: str,
        app_id: str | None,
        period: datetime.date | datetime.datetime,
    ) -> int:
        """The complete value of one period: a local date for the daily kinds, the aware start
        instant of an hour for "sessions_hourly"; `app_id` None: the whole workspace."""
        return complete_value(self._workspace(api_key), kind_named(kind), app_id, period)

    def newest_complete(self, api_key: str, kind: str) -> datetime.date | datetime.datetime:
        """The period an exporter should export now: yesterday (local) for the daily kinds,
        the start of the hour before the current one (aware, local) for "sessions_hourly"."""
        zone = zone_of(self._workspace(api_key))
        now = self._now()
        if kind_named(kind).unit == "hour":
            return previous_hour(zone, hour_containing(zone, now))
        return now.astimezone(zone).date() - datetime.timedelta(days=1)

    def local_now(self, api_key: str) -> datetime.datetime:
        """The simulator's now in the workspace's time zone."""
        return self._now().astimezone(zone_of(self._workspace(api_key)))

    def newest_day(self, ending_at: datetime.datetime | None = None) -> datetime.date:
        """MAU's newest day for a UTC workspace: the UTC day before `ending_at` (default: now;
        naive: taken as UTC). Other zones and kinds: see newest_complete()."""
        moment = ending_at or self._now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).date() - datetime.timedelta(days=1)

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock(), UTC)

    def _workspace(self, api_key: str) -> SimWorkspace:
        if api_key not in self._workspaces:
            raise ValueError("no workspace has this api_key")
        return self._workspaces[api_key]

    def _answer(self, method: str, target: str, authorization: str | None) -> Reply:
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
    ) -> Reply:
        workspace = self._workspaces.get(api_key) if api_key else None
        if workspace is None:
            return error_reply(401)
        bucket = self._bucket(workspace, now)
        allowed = bucket.remaining > 0
        bucket.remaining = max(0, bucket.remaining - 1)
        limit_headers = self._rate_limit_headers(workspace.rate_limit, bucket)
        if not allowed:
            return error_reply(429, headers=limit_headers)
        kind = kind_of(path, params.get("unit"))
        kind_name = kind.name if kind else None
        fault = self._faults.take(kind_name, params.get("app_id"), workspace.api_key) or Fault()
        moment = datetime.datetime.fromtimestamp(now, UTC)
        reply = fault.reply() or endpoints.answer(
            workspace, method, path, params, now=moment, time_format=self._time_format
        )
        reply = with_headers(reply, limit_headers, fault.headers or {})
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


def _bearer_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None
