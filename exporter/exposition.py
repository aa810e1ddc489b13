"""The body of /metrics, in the format the scraper asks for (Prometheus text or OpenMetrics),
gzipped when it accepts gzip, restricted to `name[]` families when asked, with at most
`max_requests` scrapes served at once.

The body is the cached rendering of the stored families followed by the live ones, rendered
for this scrape. A `name[]` scrape renders what it asked for, from both, on the spot."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.exposition_cache import GZIP_LEVEL, ExpositionCache


@dataclass(frozen=True)
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: bytes


class Exposition:
    def __init__(self, cached: ExpositionCache, live: Collector, *, max_requests: int) -> None:
        """`cached` holds the stored families, `live` yields those read on every scrape;
        `max_requests` scrapes are served at once, more get a 503 (0: no limit)."""
        self._cached = cached
        self._live = live
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
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        gzipped = gzip_accepted(accept_encoding)
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        names = parse_qs(query).get("name[]")
        if names is not None:
            body = encoder(_Only((self._cached.source, self._live), names))
            return Response("200 OK", headers, _gzip(body) if gzipped else body)
        rendering = self._cached.rendering(encoder, content_type)
        live = encoder(self._live)
        body = rendering.gzip_with(live) if gzipped else rendering.body + live
        return Response("200 OK", headers, body)


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


class _Only(Collector):
    """The families named in `name[]`: by family name (`braze_api_requests`) or by the name of
    one of their samples (`braze_api_requests_total`)."""

    def __init__(self, sources: Iterable[Collector], names: Iterable[str]) -> None:
        self._sources = tuple(sources)
        self._names = frozenset(names)

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            for family in source.collect():
                if family.name in self._names or any(s.name in self._names for s in family.samples):
                    yield family
