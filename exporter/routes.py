"""The exporter's endpoints as one WSGI app: the metrics, the health checks, the status page
and the reload, behind the web config's basic auth (except the health checks) and headers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.exposition import Exposition, Response
from exporter.reload import ReloadOutcome
from exporter.webconfig import BasicAuth, WebConfig

if TYPE_CHECKING:  # wsgiref.types is Python 3.11+; typeshed has the same names for 3.10
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

Check = Callable[[], bool]
OPEN_PATHS = ("/healthz", "/readyz")  # no auth: Kubernetes probes, and they reveal nothing
READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Endpoints:
    exposition: Exposition
    is_healthy: Check
    is_ready: Check
    status_page: Callable[[], str]
    reload: Callable[[], ReloadOutcome]
    metrics_path: str = "/metrics"


class ExporterApp:
    """Routes requests; the web config's users and headers can be replaced while serving."""

    def __init__(self, endpoints: Endpoints, web: WebConfig) -> None:
        self._endpoints = endpoints
        self._web_lock = threading.Lock()
        self._web = web
        self._auth = BasicAuth(web.users)

    @property
    def web_config(self) -> WebConfig:
        with self._web_lock:
            return self._web

    def set_web_config(self, web: WebConfig) -> None:
        auth = BasicAuth(web.users)  # hashes a dummy password: not under the lock
        with self._web_lock:
            self._web, self._auth = web, auth

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._web_lock:
            web, auth = self._web, self._auth
        response = self._route(environ, auth)
        headers = [*response.headers, *web.headers.items()]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(len(response.body))))
        start_response(response.status, headers)
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [response.body]

    def _route(self, environ: WSGIEnvironment, auth: BasicAuth) -> Response:
        path, method = environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"]
        endpoints = self._endpoints
        if path in OPEN_PATHS:
            return _check(
                path, method, endpoints.is_healthy if path == "/healthz" else endpoints.is_ready
            )
        if not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            return _text(
                "401 Unauthorized",
                "unauthorized\n",
                [("WWW-Authenticate", 'Basic realm="braze-exporter", charset="UTF-8"')],
            )
        if path == endpoints.metrics_path:
            if method not in READ_METHODS:
                return _not_allowed(READ_METHODS)
            return endpoints.exposition.respond(
                environ.get("HTTP_ACCEPT", ""),
                environ.get("HTTP_ACCEPT_ENCODING", ""),
                environ.get("QUERY_STRING", ""),
            )
        if path == "/":
            if method not in READ_METHODS:
                return _not_allowed(READ_METHODS)
            html = endpoints.status_page().encode()
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]
            return Response("200 OK", headers, html)
        if path == "/-/reload":
            if method != "POST":
                return _not_allowed(("POST",))
            return _reloaded(endpoints.reload())
        return _text("404 Not Found", "not found\n")


def _check(path: str, method: str, check: Check) -> Response:
    if method not in READ_METHODS:
        return _not_allowed(READ_METHODS)
    if check():
        return _text("200 OK", "ok\n")
    return _text("503 Service Unavailable", "not ready\n" if path == "/readyz" else "unhealthy\n")


def _reloaded(outcome: ReloadOutcome) -> Response:
    if outcome.succeeded:
        return _text("200 OK", "config reloaded\n")
    lines = "".join(f"  {problem}\n" for problem in outcome.problems)
    return _text(
        "500 Internal Server Error",
        f"reload failed, still running on the last good config:\n{lines}",
    )


def _not_allowed(methods: Iterable[str]) -> Response:
    allowed = ", ".join(methods)
    return _text("405 Method Not Allowed", "method not allowed\n", [("Allow", allowed)])


def _text(status: str, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])], text.encode()
    )
