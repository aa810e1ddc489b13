"""Counters and histograms about the exporter's own requests to Braze."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

REQUEST_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestTelemetry:
    """Counts every HTTP request sent to Braze (retries included) and times it; sets `changed`
    after each."""

    def __init__(self, registry: CollectorRegistry, changed: threading.Event) -> None:
        self._changed = changed
        self._requests = Counter(
            "braze_api_requests",
            "HTTP requests sent to the Braze API, by HTTP status or failure "
            "(timeout, connection_error, body_too_large); retries count too.",
            ["workspace", "kpi", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "braze_api_request_duration_seconds",
            "Time taken by each HTTP request to the Braze API.",
            ["workspace", "kpi"],
            buckets=REQUEST_SECONDS_BUCKETS,
            registry=registry,
        )

    def observe(self, workspace: str, kpi: str, code: str, seconds: float) -> None:
        self._requests.labels(workspace, kpi, code).inc()
        self._duration.labels(workspace, kpi).observe(seconds)
        self._changed.set()
