"""The stored families rendered once per change rather than once per scrape.

What the polls stored changes only when a Braze answer arrives, a few times per poll interval,
while scrapes can come many times a second: rendering a thousand series on each of them is
where a scrape's time went. A renderer thread waits for the store's doorbell (`changed`), lets
the answers that follow within `BATCH_SECONDS` arrive too, so that a cycle of a thousand
answers is rendered a few times rather than a thousand, and renders every format a scraper
has asked for: its bytes, and its gzip stream left open. A scrape then only renders the small
families that move with the clock or the process, and appends them (`Rendering.gzip_with`
copies the open stream and compresses the tail into it, so gzip costs the tail alone).

A scrape sees an answer at most `BATCH_SECONDS` plus one rendering after it was stored.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Encoder = Callable[[Collector], bytes]  # prometheus_client's generate_latest, in one format

BATCH_SECONDS = 0.5
GZIP_LEVEL = 6  # prometheus_client's own, and where the size stops shrinking much
OPENMETRICS = "application/openmetrics-text"
OPENMETRICS_END = b"# EOF\n"


@dataclass(frozen=True)
class Rendering:
    """One format's bytes of the stored families: complete but for the end of the exposition
    (OpenMetrics' `# EOF`, which must come last), plain and as an open gzip stream."""

    body: bytes
    gzip_head: bytes  # what the open stream has written so far
    open_gzip: zlib._Compress  # never flushed: each scrape works on a copy

    @classmethod
    def of(cls, body: bytes) -> Rendering:
        stream = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip
        return cls(body, stream.compress(body), stream)

    def gzip_with(self, tail: bytes) -> bytes:
        """One gzip member of `body + tail`."""
        stream = self.open_gzip.copy()
        return self.gzip_head + stream.compress(tail) + stream.flush()


class ExpositionCache:
    """The renderings of `source` in each format asked for, renewed after `changed` is set.

    `cycles` counts the completed poll cycles: the renderer does not wait out the batch after
    a cycle ended, and a scrape that comes before it is done renders for itself, so that once
    a cycle is seen to end (in the log, or by /readyz) every scrape shows all of it."""

    def __init__(
        self,
        source: Collector,
        changed: threading.Event,
        cycles: Callable[[], int],
        *,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self._source = source
        self._changed = changed
        self._cycles = cycles
        self._batch_seconds = batch_seconds
        self._rendering = threading.Lock()  # one rendering of the source at a time
        self._renderings: dict[str, tuple[Encoder, Rendering]] = {}  # by content type
        self._rendered_cycles = -1  # the cycles completed when the renderings began
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="exposition renderer", daemon=True)

    @property
    def source(self) -> Collector:
        return self._source

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()  # wakes the renderer, which then sees `_stopped`

    def rendering(self, encoder: Encoder, content_type: str) -> Rendering:
        """The newest rendering in this format; the first ask renders it at once."""
        held = self._renderings.get(content_type)
        if held is not None and not self._cycle_ended():
            return held[1]
        with self._rendering:
            if self._cycle_ended():
                self._render_all()
            held = self._renderings.get(content_type)
            if held is None:
                held = encoder, _render(self._source, encoder, content_type)
                self._renderings = {**self._renderings, content_type: held}
        return held[1]

    def refresh(self) -> None:
        """Render now: for a change that must show on the next scrape (a reload)."""
        with self._rendering:
            self._render_all()

    def _cycle_ended(self) -> bool:
        return self._cycles() != self._rendered_cycles

    def _renew(self) -> None:
        while True:
            self._changed.wait()
            if not self._cycle_ended() and self._stopped.wait(self._batch_seconds):
                return
            if self._stopped.is_set():
                return
            self._changed.clear()  # a write from here on is rendered the next time round
            try:
                self.refresh()
            except Exception:  # a bug: keep serving the last rendering, try again next change
                log.exception("rendering the metrics failed")

    def _render_all(self) -> None:
        """Render every format asked for (under `_rendering`)."""
        self._rendered_cycles = self._cycles()
        self._renderings = {
            content_type: (encoder, _render(self._source, encoder, content_type))
            for content_type, (encoder, _) in self._renderings.items()
        }


def _render(source: Collector, encoder: Encoder, content_type: str) -> Rendering:
    body = encoder(source)
    if content_type.startswith(OPENMETRICS):
        body = body.removesuffix(OPENMETRICS_END)
    return Rendering.of(body)
