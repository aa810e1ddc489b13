import socket
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from exporter.server import (
    ExporterServer,
    format_listen_address,
    make_app,
    parse_listen_address,
)


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
        ("host:http", "port must be 0..65535"),
        ("host:70000", "port must be 0..65535"),
    ],
)
def test_bad_listen_addresses(address: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_listen_address(address)


class Flags:
    healthy = True
    ready = False


@pytest.fixture
def served() -> Iterator[tuple[str, Flags]]:
    registry = CollectorRegistry()
    Gauge("demo_value", "A value.", registry=registry).set(7)
    flags = Flags()
    app = make_app(registry, is_healthy=lambda: flags.healthy, is_ready=lambda: flags.ready)
    server = ExporterServer(app, "127.0.0.1", 0)
    server.start()
    yield f"http://127.0.0.1:{server.port}", flags
    server.stop()


def test_metrics_endpoint(served: tuple[str, Flags]) -> None:
    url, _ = served
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert "demo_value 7.0" in response.text
    gzipped = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert "demo_value 7.0" in gzipped.text


def test_health_and_readiness_follow_their_checks(served: tuple[str, Flags]) -> None:
    url, flags = served
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
    flags.ready = True
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    flags.healthy = False
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 503


def test_head_and_other_methods(served: tuple[str, Flags]) -> None:
    url, _ = served
    assert requests.head(f"{url}/healthz", timeout=5).status_code == 200
    refused = requests.delete(f"{url}/metrics", timeout=5)
    assert refused.status_code == 405
    assert refused.headers["Allow"] == "GET, HEAD"


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    try:
        server = ExporterServer(
            make_app(CollectorRegistry(), is_healthy=lambda: True, is_ready=lambda: True), "::1", 0
        )
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    server.start()
    try:
        assert requests.get(f"http://[::1]:{server.port}/healthz", timeout=5).text == "ok\n"
    finally:
        server.stop()
