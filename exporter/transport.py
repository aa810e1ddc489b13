"""HTTP transport for the Braze client: a total deadline per request and capped bodies.

requests' timeout bounds each socket read, not the request, so a server that drips one byte a
second never times out; and the status line, headers and TLS handshake are read inside
http.client and ssl, where no loop of ours can look at a clock. So each request runs inside a
`Deadline`: the connections it uses register with it, and when the time is up a timer thread
shuts their sockets down, which ends any of those reads at once. `DeadlineAdapter` mounts
such connections on a requests session. `read_body` reads a streamed body in chunks,
decompressing gzip or deflate itself, and refuses it as soon as it is over `MAX_BODY_BYTES`
as received or decompressed (a gzip bomb stops early). DNS lookups cannot be interrupted.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
import zlib
from types import TracebackType
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from exporter.ca_bundles import verifying_context

MAX_BODY_BYTES = 4 * 1024 * 1024  # a KPI answer is a few kilobytes
_READ_CHUNK = 64 * 1024


class DeadlinePassed(Exception):
    """The request's time is up."""


class BodyTooLarge(Exception):
    """The body is over MAX_BODY_BYTES; the argument ends the sentence saying so."""


class CorruptBody(Exception):
    """The body's gzip or deflate data cannot be decompressed."""


def read_body(response: requests.Response, deadline: Deadline) -> bytes:
    """The whole body of a streamed response, within the deadline and the caps."""
    announced = response.headers.get("Content-Length", "").strip()
    if announced.isascii() and announced.isdigit() and int(announced) > MAX_BODY_BYTES:
        raise BodyTooLarge(f" (Content-Length: {int(announced)})")
    body = _Body(response.headers.get("Content-Encoding", ""))
    for chunk in response.raw.stream(_READ_CHUNK, decode_content=False):
        body.add(chunk)
        if deadline.passed:
            break
    if deadline.passed:  # a body cut short by the watchdog can look complete
        raise DeadlinePassed()
    return body.whole()


class _Body:
    """A body as it arrives, decompressed on the fly a chunk at a time, refused as soon as it
    is over MAX_BODY_BYTES either as received or decompressed (a gzip bomb stops early)."""

    def __init__(self, content_encoding: str) -> None:
        coding = content_encoding.strip().lower()
        # 32 + MAX_WBITS: a gzip or a zlib header, as HTTP's "gzip" and "deflate" are.
        compressed = coding in ("gzip", "x-gzip", "deflate")
        self._inflater = zlib.decompressobj(32 + zlib.MAX_WBITS) if compressed else None
        self._received = 0
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > MAX_BODY_BYTES:
            raise BodyTooLarge("")
        if self._inflater is None:
            self._keep(chunk)
            return
        try:
            while True:
                part = self._inflater.decompress(chunk, _READ_CHUNK)
                self._keep(part)
                chunk = self._inflater.unconsumed_tail
                if not chunk and len(part) < _READ_CHUNK:
                    return
        except zlib.error:
            raise CorruptBody() from None

    def whole(self) -> bytes:
        if self._inflater is not None:
            self._keep(self._inflater.flush())
        return bytes(self._data)

    def _keep(self, part: bytes) -> None:
        if len(self._data) + len(part) > MAX_BODY_BYTES:
            raise BodyTooLarge(" once decompressed")
        self._data += part


# The deadline of the request being sent by this thread, for the connection it uses.
_current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "braze_request_deadline", default=None
)


class Deadline:
    """One request's total time. While it runs (a `with` block), the connections the request
    uses register here; when the time is up, a timer thread shuts their sockets down, which
    ends a blocked read at once. Leaving the block disarms the timer."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connections: list[_WatchedConnection] = []
        # Handles of connections closed while a response still reads from their socket
        # (http.client closes the connection of a "Connection: close" answer at once).
        self._orphans: list[socket.socket] = []
        self._expired = False
        self._over = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.name = "braze-deadline"
        self._token: contextvars.Token[Deadline | None] | None = None

    @property
    def passed(self) -> bool:
        return self._expired or time.monotonic() >= self._end

    @property
    def seconds(self) -> float:
        return self._seconds

    def watch(self, connection: _WatchedConnection) -> bool:
        """Cut `connection` when the time is up; True if it is up already."""
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            return self._expired

    def adopt(self, handle: socket.socket) -> bool:
        """Cut `handle` when the time is up and close it at the end; False once over."""
        with self._lock:
            if self._over:
                return False
            self._orphans.append(handle)
            if self._expired:
                _shut_down(handle)
            return True

    def __enter__(self) -> Deadline:
        self._token = _current_deadline.set(self)
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._over = True
            orphans, self._orphans = self._orphans, []
        self._timer.cancel()
        for handle in orphans:
            handle.close()
        if self._token is not None:
            _current_deadline.reset(self._token)

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            connections = list(self._connections)
            for handle in self._orphans:
                _shut_down(handle)
        for connection in connections:
            connection.cut(self)


class _WatchedConnection(HTTPConnection):
    """A connection that answers to the deadline of the request using it. It keeps a handle of
    its own on the socket (a duplicate), so that it can be shut down at any time: during a TLS
    handshake, when urllib3's socket object has been handed over to ssl, or after http.client
    closed the connection while its response is still being read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch_lock = threading.Lock()
        self._deadline: Deadline | None = None
        self._handle: socket.socket | None = None
        self._cut = False

    def connect(self) -> None:
        self._claim()
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._claim()  # a connection from the pool: the request using it changes
        super().request(*args, **kwargs)

    def cut(self, deadline: Deadline) -> None:
        """Shut the socket down, unless another request (with another deadline) uses it now."""
        with self._watch_lock:
            if self._deadline is deadline:
                self._cut = True
                _shut_down(self._handle)

    def close(self) -> None:
        super().close()
        with self._watch_lock:
            handle, self._handle = self._handle, None
            deadline = self._deadline
            self._cut = False
        if handle is not None and (deadline is None or not deadline.adopt(handle)):
            handle.close()

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        with self._watch_lock:
            try:
                self._handle = sock.dup()
            except OSError:
                sock.close()
                raise
            if self._cut:  # the time was up while connecting
                _shut_down(self._handle)
        return sock

    def _claim(self) -> None:
        deadline = _current_deadline.get()
        if deadline is None:
            return
        with self._watch_lock:
            # Cut by the deadline of the request that used it before (just as it went back to
            # the pool): http.client connects again for this one.
            stale = self._cut and self._deadline is not deadline
            self._deadline = deadline
        if stale:
            self.close()
        if deadline.watch(self):
            raise TimeoutError("the request's deadline has passed")


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    """Its connections verify with the context shared by all that trust the same CA bundle."""

    ConnectionCls = _WatchedHTTPSConnection

    def _new_conn(self) -> HTTPSConnection:
        conn = cast(HTTPSConnection, super()._new_conn())  # one of ConnectionCls
        if conn.ssl_context is None and (conn.ca_certs or conn.ca_cert_dir):
            conn.ssl_context = verifying_context(conn.ca_certs, conn.ca_cert_dir)
            conn.ca_certs = conn.ca_cert_dir = None  # loaded already
        return conn


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPConnectionPool,
    "https": _WatchedHTTPSConnectionPool,
}


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections, direct or through an HTTP proxy, obey `Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS brings connection classes of its own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def _shut_down(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # not connected (any more)
            sock.shutdown(socket.SHUT_RDWR)
