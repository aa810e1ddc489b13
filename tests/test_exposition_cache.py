"""The stored families are rendered once per change, in the formats asked for, and a change is
served within the batch; a completed cycle shows on the very next scrape."""

import gzip
import logging
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.exposition_cache import Encoder, ExpositionCache, Rendering
from tests.conftest import wait_until

TEXT = choose_encoder("")
OPEN_METRICS = choose_encoder("application/openmetrics-text; version=1.0.0")


class Counting(Collector):
    """One gauge whose value tests set; counts how often it is collected."""

    def __init__(self) -> None:
        self.value = 1.0
        self.collected = 0
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        if self.fail:
            raise RuntimeError("a bug in a collector")
        yield GaugeMetricFamily("demo_value", "A value.", value=self.value)


class Cycles:
    completed = 0

    def __call__(self) -> int:
        return self.completed


def body(cache: ExpositionCache, encoder: tuple[Encoder, str] = TEXT) -> bytes:
    return cache.rendering(*encoder).body


@pytest.fixture
def source() -> Counting:
    return Counting()


def test_scrapes_without_a_change_render_once(source: Counting) -> None:
    cache = ExpositionCache(source, threading.Event(), Cycles())
    bodies = {body(cache) for _ in range(100)}
    assert bodies == {generate_latest(source)}
    assert source.collected == 2  # the cache's one rendering, and generate_latest just above


def test_a_change_is_served_within_the_batch(source: Counting) -> None:
    changed = threading.Event()
    cache = ExpositionCache(source, changed, Cycles(), batch_seconds=0.05)
    cache.start()
    try:
        assert b"demo_value 1.0" in body(cache)
        source.value = 2.0
        changed.set()
        wait_until(lambda: b"demo_value 2.0" in body(cache), "the new value", timeout=5)
    finally:
        cache.stop()


def test_a_burst_of_changes_is_rendered_a_few_times_not_once_each(source: Counting) -> None:
    changed = threading.Event()
    cache = ExpositionCache(source, changed, Cycles(), batch_seconds=0.2)
    cache.start()
    try:
        body(cache)
        for value in range(1000):  # a cycle's answers, all within well under a second
            source.value = float(value)
            changed.set()
        wait_until(lambda: b"demo_value 999.0" in body(cache), "the last value", timeout=5)
    finally:
        cache.stop()
    assert source.collected <= 10


def test_a_completed_cycle_shows_on_the_next_scrape_without_waiting(source: Counting) -> None:
    cycles = Cycles()
    cache = ExpositionCache(source, threading.Event(), cycles, batch_seconds=3600)
    cache.start()  # it would wait an hour to batch a mere change
    try:
        body(cache)
        source.value = 5.0
        cycles.completed += 1  # the poller records the cycle after its last answer
        assert b"demo_value 5.0" in body(cache)
    finally:
        cache.stop()


def test_refresh_renders_every_format_asked_for(source: Counting) -> None:
    cache = ExpositionCache(source, threading.Event(), Cycles(), batch_seconds=3600)
    body(cache, TEXT)
    body(cache, OPEN_METRICS)
    source.value = 3.0
    cache.refresh()
    assert b"demo_value 3.0" in body(cache, TEXT)
    assert b"demo_value 3.0" in body(cache, OPEN_METRICS)


def test_openmetrics_rendering_leaves_the_end_to_the_scrape(source: Counting) -> None:
    cache = ExpositionCache(source, threading.Event(), Cycles())
    rendered = body(cache, OPEN_METRICS)
    assert b"# EOF" not in rendered
    assert rendered + b"# EOF\n" == OPEN_METRICS[0](source)


def test_gzip_with_is_one_gzip_member_of_body_and_tail() -> None:
    registry = CollectorRegistry()
    for n in range(200):
        Gauge(f"demo_{n}", "A value.", registry=registry).set(n)
    rendering = Rendering.of(generate_latest(registry))
    first = rendering.gzip_with(b"live_value 1.0\n")
    second = rendering.gzip_with(b"live_value 2.0\n")  # the open stream is left as it was
    assert gzip.decompress(first) == rendering.body + b"live_value 1.0\n"
    assert gzip.decompress(second) == rendering.body + b"live_value 2.0\n"
    assert len(first) < len(rendering.body) / 3
    assert first.count(b"\x1f\x8b\x08") == 1  # one member: no reader stops after the first


def test_a_failed_rendering_keeps_the_last_one_and_is_logged(
    source: Counting, caplog: pytest.LogCaptureFixture
) -> None:
    changed = threading.Event()
    cache = ExpositionCache(source, changed, Cycles(), batch_seconds=0.01)
    cache.start()
    try:
        before = body(cache)
        source.fail = True
        with caplog.at_level(logging.ERROR, logger="exporter.exposition_cache"):
            changed.set()
            wait_until(lambda: caplog.records, "the error to be logged", timeout=5)
        assert body(cache) == before
        source.fail = False
        source.value = 4.0
        changed.set()
        wait_until(lambda: b"demo_value 4.0" in body(cache), "a rendering again", timeout=5)
    finally:
        cache.stop()
    assert caplog.records[0].getMessage() == "rendering the metrics failed"


def test_stop_ends_the_renderer(source: Counting) -> None:
    cache = ExpositionCache(source, threading.Event(), Cycles())
    cache.start()
    cache.stop()
    wait_until(
        lambda: not any(t.name == "exposition renderer" for t in threading.enumerate()),
        "the renderer to end",
    )
