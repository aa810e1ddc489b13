"""The HTTP plumbing: a threading server that can be stopped with keep-alive connections open,
and a handler that sends whatever answer the simulator decided."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias

from exporter.simulator.replies import Reply

Answer: TypeAlias = Callable[[str, str, "str | None"], Reply]  # method, target, Authorization
_Request: TypeAlias = "socket.socket | tuple[bytes, socket.socket]"  # as socketserver has it


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() ends open connections itself; never wait on keep-alives

    def __init__(
        self,
        host: str,
        port: int,
        answer: Answer,
        stopping: threading.Event,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.answer = answer
        self.tls = tls
        self.stopping = stopping
        self._open_connections: set[_Request] = set()
        self._connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also looks up the host's FQDN, which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, client_address = super().get_request()
        if self.tls is not None:  # the handshake happens on the first read, in its own thread
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, client_address

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
    # Head and body go out in two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK (40 ms on Linux), which Braze's answers do not.
    disable_nagle_algorithm = True
    server_version = "BrazeSimulator"
    sys_version = ""
    server: SimulatorHTTPServer

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
