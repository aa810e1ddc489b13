"""The listener: addresses, the worker pool against idle and slow clients, TLS."""

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import requests
import trustme

from exporter import request_heads
from exporter import server as server_module
from exporter.server import (
    ExporterServer,
    format_listen_address,
    parse_listen_address,
)

WORKERS = 4


@pytest.mark.parametrize(
    ("address", "expected", "shown"),
    [
        (":9877", ("", 9877), "*:9877"),
        ("127.0.0.1:0", ("127.0.0.1", 0), "127.0.0.1:0"),
        ("[::1]:9877", ("::1", 9877), "[::1]:9877"),
        ("localhost:80", ("localhost", 80), "localhost:80"),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str, int], shown: str) -> None:
    assert parse_listen_address(address) == expected
    assert format_listen_address(*expected) == shown


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("9877", "expected HOST:PORT"),
        ("::1:9877", "put IPv6 hosts in brackets"),
        ("host:99999", "port must be 0..65535"),
        ("host:http", "port must be 0..65535"),
    ],
)
def test_bad_listen_addresses(address: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_listen_address(address)


def hello(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
    body = f"hello over {environ['wsgi.url_scheme']}\n".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])  # type: ignore[operator]
    return [body]


@pytest.fixture
def plain() -> Iterator[ExporterServer]:
    server = ExporterServer(hello, "127.0.0.1", 0, workers=WORKERS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA) -> Iterator[ExporterServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ExporterServer(hello, "127.0.0.1", 0, workers=WORKERS, tls_context=context)
    server.start()
    yield server
    server.stop()


def http_threads() -> int:
    return threading.active_count()


def test_idle_connections_hold_no_thread_and_do_not_delay_a_scrape(
    plain: ExporterServer,
) -> None:
    before = http_threads()
    idle = [socket.create_connection(("127.0.0.1", plain.port)) for _ in range(300)]
    try:
        time.sleep(0.2)  # let the selector accept them all
        started = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{plain.port}/", timeout=5)
        assert response.text == "hello over http\n"
        assert time.monotonic() - started < 1.0
        assert http_threads() <= before  # not one more thread for 300 connections
    finally:
        for connection in idle:
            connection.close()


def test_keep_alive_connections_return_to_the_selector(plain: ExporterServer) -> None:
    before = http_threads()
    sessions = [requests.Session() for _ in range(50)]
    try:
        for session in sessions:  # each keeps its connection open after its answer
            assert session.get(f"http://127.0.0.1:{plain.port}/", timeout=5).ok
        assert http_threads() <= before
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{plain.port}/", timeout=5).ok
        assert time.monotonic() - started < 1.0
    finally:
        for session in sessions:
            session.close()


HEAD_LIMIT = 2.0


@pytest.fixture
def short_head_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_heads, "HEAD_LIMIT_SECONDS", HEAD_LIMIT)


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


@pytest.mark.usefixtures("short_head_limit")
def test_a_slow_client_is_cut_off() -> None:
    """Half a request line and then nothing: the connection is closed once the head has not
    come whole within the limit (the old server held it for good)."""
    server = ExporterServer(hello, "127.0.0.1", 0, workers=WORKERS)
    server.start()
    try:
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.settimeout(HEAD_LIMIT + 10)
        slow.sendall(b"GET /met")
        started = time.monotonic()
        assert read_until_closed(slow) == b""
        assert HEAD_LIMIT - 0.5 <= time.monotonic() - started <= HEAD_LIMIT + 2
    finally:
        server.stop()


def test_slow_clients_hold_no_worker(plain: ExporterServer) -> None:
    """More clients trickling their requests than there are workers: a scrape still gets a
    worker at once, and the slow ones are served when their heads are whole."""
    before = http_threads()
    slow = [socket.create_connection(("127.0.0.1", plain.port)) for _ in range(10 * WORKERS)]
    try:
        for connection in slow:
            connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.3)
        for connection in slow:
            connection.sendall(b"X-Slow: 1\r\n")  # still not whole
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{plain.port}/", timeout=5).ok
        assert time.monotonic() - started < 1.0
        assert http_threads() <= before
        for connection in slow:
            connection.sendall(b"Connection: close\r\n\r\n")
            connection.settimeout(5)
        assert all(b"hello over http" in read_until_closed(c) for c in slow)
    finally:
        for connection in slow:
            connection.close()


def test_listen_backlog_is_not_five(plain: ExporterServer) -> None:
    """`ss` shows a listening socket's backlog as its Send-Q."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    listing = subprocess.run(
        [ss, "-ltnH", f"sport = :{plain.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    kernel_cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(listing[2]) == min(server_module.LISTEN_BACKLOG, kernel_cap) > 5


def test_tls_serves_https(tls: ExporterServer, ca: trustme.CA, tmp_path: object) -> None:
    with ca.cert_pem.tempfile() as ca_file:
        response = requests.get(f"https://127.0.0.1:{tls.port}/", verify=ca_file, timeout=5)
    assert response.text == "hello over https\n"
    assert tls.tls


def test_tls_refuses_plain_http(tls: ExporterServer) -> None:
    response = requests.get(f"http://127.0.0.1:{tls.port}/", timeout=5)
    assert response.status_code == 400
    assert "HTTP request to an HTTPS server" in response.text


def test_a_silent_tls_client_does_not_stop_others(tls: ExporterServer, ca: trustme.CA) -> None:
    """The handshake runs in a worker on the client's first bytes: a client that connects
    and says nothing holds no thread and delays nobody."""
    silent = [socket.create_connection(("127.0.0.1", tls.port)) for _ in range(20)]
    try:
        started = time.monotonic()
        with ca.cert_pem.tempfile() as ca_file:
            assert requests.get(f"https://127.0.0.1:{tls.port}/", verify=ca_file, timeout=5).ok
        assert time.monotonic() - started < 1.0
    finally:
        for connection in silent:
            connection.close()


def test_a_new_certificate_serves_new_connections(tls: ExporterServer) -> None:
    other_ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other_ca.issue_cert("127.0.0.1").configure_cert(context)
    tls.set_tls_context(context)
    with other_ca.cert_pem.tempfile() as ca_file:
        assert requests.get(f"https://127.0.0.1:{tls.port}/", verify=ca_file, timeout=5).ok


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    try:
        server = ExporterServer(hello, "::1", 0, workers=WORKERS)
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    server.start()
    try:
        assert requests.get(f"http://[::1]:{server.port}/", timeout=5).text == "hello over http\n"
    finally:
        server.stop()


def test_a_busy_port_is_an_error_at_construction(plain: ExporterServer) -> None:
    with pytest.raises(OSError):
        ExporterServer(hello, "127.0.0.1", plain.port, workers=WORKERS)
