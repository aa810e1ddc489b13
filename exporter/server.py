"""The exporter's HTTP endpoints: /metrics, /healthz, /readyz and a landing page at /."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

if TYPE_CHECKING:  # wsgiref.types is Python 3.11+; typeshed has the same names for 3.10
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Check = Callable[[], bool]


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


def make_app(registry: CollectorRegistry, *, is_healthy: Check, is_ready: Check) -> WSGIApplication:
    metrics_app = make_wsgi_app(registry)
    checks = {"/healthz": is_healthy, "/readyz": is_ready}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _plain(
                start_response,
                "405 Method Not Allowed",
                "method not allowed\n",
                [("Allow", "GET, HEAD")],
            )
        if path == "/metrics":
            metrics: Iterable[bytes] = metrics_app(environ, start_response)
            return metrics
        if path in checks:
            if checks[path]():
                return _plain(start_response, "200 OK", "ok\n")
            return _plain(
                start_response,
                "503 Service Unavailable",
                "not ready\n" if path == "/readyz" else "unhealthy\n",
            )
        if path == "/":
            body = LANDING_PAGE.encode()
            start_response(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return _plain(start_response, "404 Not Found", "not found\n")

    return app


class ExporterServer:
    """A threaded WSGI server bound at construction, served from a daemon thread."""

    def __init__(self, app: WSGIApplication, host: str, port: int) -> None:
        self._httpd = _bind(app, host, port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


LANDING_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Braze Exporter</title></head>
<body>
<h1>Braze Exporter</h1>
<p>Exports Braze KPIs (monthly active users) as Prometheus metrics. Values are polled from
Braze on a schedule and cached; scraping does not call Braze.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="healthz">Health</a> (200 while poll cycles keep finishing)</li>
<li><a href="readyz">Readiness</a> (200 once the first poll cycle has finished)</li>
</ul>
</body>
</html>
"""


def _plain(
    start_response: StartResponse,
    status: str,
    text: str,
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(extra_headers or []),
        ],
    )
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # An empty host means every address, IPv4 and IPv6, like Go exporters' ":9877".
        if self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _bind(app: WSGIApplication, host: str, port: int) -> WSGIServer:
    if host == "":  # every address: dual-stack where the machine has IPv6
        try:
            return _bind(app, "::", port)
        except OSError:
            return _bind(app, "0.0.0.0", port)  # noqa: S104 (asked for by an empty host)
    server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
    return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Access logs are not the exporter's business; Prometheus scrapes every few seconds."""
