"""The body of /metrics: the registry in the format the scraper asks for (Prometheus text or
OpenMetrics), gzipped when it accepts gzip, restricted to `name[]` families when asked, with at
most `max_requests` scrapes rendered at once."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry


@dataclass(frozen=True)
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: bytes


class Exposition:
    def __init__(self, registry: CollectorRegistry, *, max_requests: int) -> None:
        """`max_requests` scrapes are rendered at once, more get a 503 (0: no limit)."""
        self._registry = registry
        self._max_requests = max_requests
        self._slots = threading.BoundedSemaphore(max_requests) if max_requests else None

    def respond(self, accept: str, accept_encoding: str, query: str) -> Response:
        if self._slots is not None and not self._slots.acquire(blocking=False):
            body = f"too many concurrent scrapes (--web.max-requests={self._max_requests})\n"
            return Response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "1")],
                body.encode(),
            )
        try:
            return self._render(accept, accept_encoding, query)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _render(self, accept: str, accept_encoding: str, query: str) -> Response:
        encoder, content_type = choose_encoder(accept)
        names = parse_qs(query).get("name[]")
        source: Collector = self._registry if names is None else _Only(self._registry, names)
        body = encoder(source)
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=6)
            headers.append(("Content-Encoding", "gzip"))
        return Response("200 OK", headers, body)


class _Only(Collector):
    """The families of a registry named in `name[]`: by family name (`braze_api_requests`) or
    by the name of one of its samples (`braze_api_requests_total`)."""

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self._registry = registry
        self._names = frozenset(names)

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.name in self._names or any(s.name in self._names for s in family.samples):
                yield family
