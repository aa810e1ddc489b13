"""Holding slow plain-HTTP requests away from the worker threads until their head is whole.

A worker that reads a request head blocks until it is complete. A client that sends half a
request line and then a byte every few seconds would hold a worker for as long as it likes,
and as many such clients as there are workers would keep every scrape waiting. So the server
hands a connection to a worker only once its request head has arrived (a blank line ends it).
Until then it waits here, in one thread: an edge-triggered epoll wakes the thread only when
more bytes arrive, the bytes are looked at without being read (MSG_PEEK), and a connection
whose head is not complete `limit` seconds after it was first held is closed.

Linux only (epoll); elsewhere `HeadWaiter.available` is False and workers read heads as
cheroot does. TLS connections are not held: their bytes cannot be looked at before the
handshake, which the worker does.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

HEAD_LIMIT_SECONDS = 10.0  # from the first held byte to the end of the head
PEEK_BYTES = 65536  # a head this long goes to a worker, which refuses it if too long


class _Buffer(Protocol):
    def has_data(self) -> bool: ...


class Connection(Protocol):
    socket: socket.socket
    rfile: _Buffer

    def close(self) -> None: ...


class HeadWaiter:
    available = hasattr(select, "epoll")

    def __init__(
        self,
        ready: Callable[[Connection], None],
        *,
        limit: float = HEAD_LIMIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ready = ready
        self._limit = limit
        self._monotonic = monotonic
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._held: dict[int, tuple[Connection, float]] = {}  # by file descriptor
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request heads", daemon=True)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for connection, _ in held:
            connection.close()
        self._epoll.close()

    def take(self, connection: Connection) -> bool:
        """Hold `connection` if it is plain HTTP and its head is not complete yet (True), or
        leave it to the caller to hand to a worker (False)."""
        if (
            isinstance(connection.socket, ssl.SSLSocket)
            or connection.rfile.has_data()  # read ahead by the worker: a request under way
            or _head_complete(connection.socket)
        ):
            return False
        descriptor = connection.socket.fileno()
        with self._lock:
            self._held[descriptor] = (connection, self._monotonic() + self._limit)
            # Adding a descriptor that is readable already reports it once, so no byte that
            # arrived since the look above goes unnoticed.
            self._epoll.register(descriptor, select.EPOLLIN | select.EPOLLET)
        return True

    def _run(self) -> None:
        while not self._stopped.is_set():
            for descriptor, _ in self._epoll.poll(timeout=0.5):
                with self._lock:
                    held = self._held.get(descriptor)
                if held is not None and _head_complete(held[0].socket):
                    self._release(descriptor)
                    self._ready(held[0])
            self._expire()

    def _expire(self) -> None:
        now = self._monotonic()
        with self._lock:
            late = [d for d, (_, deadline) in self._held.items() if deadline <= now]
        for descriptor in late:
            connection = self._release(descriptor)
            if connection is not None:
                log.debug("request head not complete in time: connection closed")
                connection.close()

    def _release(self, descriptor: int) -> Connection | None:
        with self._lock:
            connection, _ = self._held.pop(descriptor, (None, 0.0))
            if connection is not None:
                self._epoll.unregister(descriptor)
        return connection


def _head_complete(sock: socket.socket) -> bool:
    """Whether the bytes waiting on `sock` hold a whole request head; also True at the end of
    the stream or on an error, which the worker then meets and handles."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # no wait at all, not even Python's own poll before the call
    try:
        waiting = sock.recv(PEEK_BYTES, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
    return not waiting or b"\n\r\n" in waiting or b"\n\n" in waiting or len(waiting) >= PEEK_BYTES
