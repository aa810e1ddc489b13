"""The HTTP listener: cheroot's pooled WSGI server, bound at construction, with optional TLS.

Why cheroot: a fixed pool of worker threads serves requests, and a selector (one thread) holds
every connection that is not sending a request, so idle keep-alive connections cost a file
descriptor rather than a thread. Two changes make that hold from the first byte:

- a new connection waits in the selector until its client sends something, rather than in a
  worker thread (cheroot hands it to a worker at once);
- the TLS handshake happens in the worker, on the first read, rather than in the selector's
  thread, where one client that connects and stays silent would stop every other accept.

A client that sends part of a request and then nothing holds a worker for `timeout` seconds
at most; connections idle for `timeout` seconds are closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from exporter import request_heads
from exporter.request_heads import Connection, HeadWaiter

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_SECONDS = 5  # a request must make progress this often; idle connections close
LISTEN_BACKLOG = 1024  # connections the kernel queues before the selector accepts them
KEEP_ALIVE_LIMIT = 1000  # idle keep-alive connections kept; more are closed after their answer
SPARE_WORKERS = 4  # threads beyond --web.max-requests: health probes, the status page, reloads


def parse_listen_address(address: str) -> tuple[str, int]:
    """Split HOST:PORT, [IPV6]:PORT or :PORT; raise ValueError naming what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"invalid listen address {address!r}: expected HOST:PORT, e.g. :9877")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid listen address {address!r}: put IPv6 hosts in brackets")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {address!r}: port must be 0..65535")
    return host, int(port_text)


def format_listen_address(host: str, port: int) -> str:
    """The inverse of parse_listen_address, with "*" for every address."""
    return f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"


class ExporterServer:
    """Serves a WSGI app from a worker pool of `workers` threads, over TLS when given a
    context. The socket is bound and listening once the constructor returns (OSError if it
    cannot be); `start` serves it from a daemon thread."""

    def __init__(
        self,
        app: WSGIApplication,
        host: str,
        port: int,
        *,
        workers: int,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _bind(app, host, port, workers, tls_context)
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    @property
    def tls(self) -> bool:
        return self._server.ssl_adapter is not None

    def set_tls_context(self, context: ssl.SSLContext) -> None:
        """Use `context` for connections accepted from now on (a reload's new certificate)."""
        adapter = self._server.ssl_adapter
        if adapter is None:
            raise ValueError("the server was started without TLS")
        adapter.context = context

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()


PLAIN_HTTP_ON_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


class _Connection(cheroot_server.HTTPConnection):
    sent_nothing_yet = True
    handshake_done = False

    def communicate(self) -> bool:
        """Serve a request; on a TLS connection's first turn, shake hands first (in this
        worker thread). True keeps the connection open for the next request."""
        if isinstance(self.socket, ssl.SSLSocket) and not self.handshake_done:
            try:
                self.socket.do_handshake()
            except ssl.SSLError as exc:
                if exc.reason == "HTTP_REQUEST":  # plain HTTP: answer it the way Go servers do
                    with contextlib.suppress(OSError):
                        os.write(self.socket.fileno(), PLAIN_HTTP_ON_TLS)
                log.debug("tls handshake failed", extra={"error": exc.reason or str(exc)})
                return False
            except OSError as exc:  # the client left or stayed silent for the whole timeout
                log.debug("tls handshake failed", extra={"error": str(exc)})
                return False
            self.handshake_done = True
        return bool(super().communicate())  # type: ignore[no-untyped-call]


class _Server(wsgi.Server):
    ConnectionClass = _Connection
    heads: HeadWaiter | None = None

    def process_conn(self, conn: _Connection) -> None:
        """Hand a connection to a worker once its client has sent something, and for plain
        HTTP, once that is a whole request head."""
        if conn.sent_nothing_yet:
            conn.sent_nothing_yet = False
            self.put_conn(conn)  # into the selector, which hands it back when readable
            return
        if self.heads is not None and self.heads.take(conn):
            return
        self.to_worker(conn)

    def to_worker(self, conn: Connection) -> None:
        super().process_conn(conn)

    def stop(self) -> None:
        super().stop()
        if self.heads is not None:
            self.heads.stop()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's complaints about clients (dropped connections, TLS errors, timeouts) are
        the clients' business: debug. Anything else it reports as an error is logged."""
        client_trouble = isinstance(sys.exc_info()[1], OSError)  # ssl.SSLError is one too
        if level >= logging.ERROR and not client_trouble:
            log.error("http server error", exc_info=traceback, extra={"error": msg})
        else:
            log.debug("http client error", extra={"error": msg})


class _HandshakeInWorker(BuiltinSSLAdapter):
    """TLS with a context built elsewhere (exporter.webconfig), whose handshake runs on the
    first read, in a worker thread. The WSGI environment gets the scheme only."""

    def __init__(self, context: ssl.SSLContext) -> None:  # no super(): it loads files itself
        self.certificate = self.private_key = self.certificate_chain = self.ciphers = None
        self.context = context
        self._server_env: dict[str, Any] = {}

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}


def _bind(
    app: WSGIApplication, host: str, port: int, workers: int, context: ssl.SSLContext | None
) -> _Server:
    if host == "":  # every address: dual-stack where the machine has IPv6
        try:
            return _bind(app, "::", port, workers, context)
        except OSError:
            return _bind(app, "0.0.0.0", port, workers, context)  # noqa: S104 (an empty host)
    server = _Server(
        (host, port),
        app,
        numthreads=workers,
        request_queue_size=LISTEN_BACKLOG,
        timeout=SOCKET_TIMEOUT_SECONDS,
        shutdown_timeout=1,
    )
    server.server_name = "braze-exporter"
    server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
    if context is not None:
        server.ssl_adapter = _HandshakeInWorker(context)
    server.prepare()
    if context is None and HeadWaiter.available:
        server.heads = HeadWaiter(server.to_worker, limit=request_heads.HEAD_LIMIT_SECONDS)
        server.heads.start()
    return server
