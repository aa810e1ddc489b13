"""A hostile stand-in for Braze: a raw-socket HTTP server on 127.0.0.1 that sends what a
well-behaved HTTP library cannot (endless or dripped answers, gzip bombs, bogus statuses,
the caller's own Authorization header echoed back).

Each connection reads one request and is handed to a behaviour, a function of a `Peer`;
connection n gets the n-th behaviour given, the last one serving every later connection (so a
test can follow a hostile answer with a normal one). Leaving the `with` block ends every
connection, drips included, and joins every thread.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

_MAX_REQUEST_HEAD = 64 * 1024


@dataclass
class Peer:
    """One client connection, its request read."""

    sock: socket.socket | ssl.SSLSocket
    headers: Mapping[str, str]  # of the request, names in lower case
    stopping: threading.Event

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drip(self, data: bytes, every: float) -> None:
        """Send one byte every `every` seconds, until done or the server stops."""
        for index in range(len(data)):
            if self.stopping.wait(every):
                return
            self.send(data[index : index + 1])


Behaviour = Callable[[Peer], None]


def response(
    status: int, body: bytes = b"", headers: Mapping[str, str | None] | None = None
) -> bytes:
    """The bytes of an answer; a header given as None is left out."""
    fields = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines = [f"{name}: {value}" for name, value in fields.items() if value is not None]
    head = "\r\n".join([f"HTTP/1.1 {status} Hostile", *lines])
    return f"{head}\r\n\r\n".encode("latin-1") + body


def json_response(status: int, payload: object) -> bytes:
    return response(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def sends(data: bytes) -> Behaviour:
    """Send `data` at once, then close."""
    return lambda peer: peer.send(data)


def drips(data: bytes, start: int, every: float) -> Behaviour:
    """Send `data[:start]` at once, then the rest one byte every `every` seconds."""

    def behave(peer: Peer) -> None:
        peer.send(data[:start])
        peer.drip(data[start:], every)

    return behave


def endless_chunks(
    chunk: bytes, first: bytes = b"", headers: Mapping[str, str] | None = None
) -> Behaviour:
    """A 200 with a chunked body that never ends: `first`, then `chunk` again and again."""

    def behave(peer: Peer) -> None:
        framing = {"Transfer-Encoding": "chunked", "Content-Length": None}
        peer.send(response(200, headers={**framing, **(headers or {})}))
        if first:
            peer.send(b"%x\r\n%s\r\n" % (len(first), first))
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while not peer.stopping.is_set():
            peer.send(frame)  # raises once the client has gone

    return behave


def echoes_authorization(status: int, as_json: bool) -> Behaviour:
    """An error naming the request's Authorization header, as some proxies do."""

    def behave(peer: Peer) -> None:
        text = f"refused: Authorization: {peer.headers.get('authorization', '')}"
        if as_json:
            peer.send(json_response(status, {"message": text}))
        else:
            peer.send(response(status, f"<html><p>{text}</p></html>".encode()))

    return behave


class HostileServer:
    """The server, on a free port of 127.0.0.1; `requests` holds each request's headers."""

    def __init__(
        self,
        *behaviours: Behaviour,
        tls: ssl.SSLContext | None = None,
        handshake_drip: float | None = None,  # with tls: send the server's handshake slowly
    ) -> None:
        if not behaviours:
            raise ValueError("give at least one behaviour")
        self._behaviours = behaviours
        self._tls = tls
        self._handshake_drip = handshake_drip
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[int, socket.socket | ssl.SSLSocket] = {}
        self._threads: list[threading.Thread] = []
        self._accepted = 0
        self.requests: list[Mapping[str, str]] = []  # the headers of each request read
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def url(self) -> str:
        port = self._listener.getsockname()[1]
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # ends a blocked accept() (Linux)
        self._listener.close()
        with self._lock:
            connections = list(self._open.values())
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        if self._acceptor.is_alive() or any(t.is_alive() for t in threads):
            raise AssertionError("the hostile server left a thread running")

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                behaviour = self._behaviours[min(self._accepted, len(self._behaviours) - 1)]
                self._accepted += 1
                self._open[id(connection)] = connection
                thread = threading.Thread(
                    target=self._serve, args=(connection, behaviour), daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket, behaviour: Behaviour) -> None:
        key = id(connection)
        try:
            with connection:
                sock = self._secure(connection) if self._tls else connection
                if sock is None:
                    return
                with self._lock:
                    self._open[key] = sock  # the wrapped socket now owns the descriptor
                headers = _read_request(sock)
                if headers is not None:
                    self.requests.append(headers)
                    behaviour(Peer(sock, headers, self._stopping))
        except OSError:  # the client went away, or the server is stopping
            pass
        finally:
            with self._lock:
                self._open.pop(key, None)

    def _secure(self, connection: socket.socket) -> ssl.SSLSocket | None:
        assert self._tls is not None
        if self._handshake_drip is not None:
            _drip_handshake(connection, self._tls, self._handshake_drip, self._stopping)
            return None
        return self._tls.wrap_socket(connection, server_side=True)


def _read_request(sock: socket.socket | ssl.SSLSocket) -> dict[str, str] | None:
    """The headers of one request (lower-case names); None if the client sent none."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece or len(data) > _MAX_REQUEST_HEAD:
            return None
        data += piece
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {
        name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)
    }


def _drip_handshake(
    connection: socket.socket, context: ssl.SSLContext, every: float, stopping: threading.Event
) -> None:
    """Run the server's side of a TLS handshake, sending its bytes one at a time."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    while not stopping.is_set():
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            for index in range(len(pending)):
                if stopping.wait(every):
                    return
                connection.sendall(pending[index : index + 1])
            received = connection.recv(65536)
            if not received:
                return
            incoming.write(received)
