"""New certificates without a reload: cert-manager and Kubernetes renew a certificate by
replacing the files of a mounted Secret, and Go exporters read them on every handshake.
The watch checks the files every few seconds and, when they change, reads the web config
again and serves new connections with its certificate."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable

from exporter.config import ConfigError
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int] | None, ...]  # per file: inode, size, mtime; None: missing
CHECK_SECONDS = 5.0


class CertificateWatch:
    """Watches the TLS files of the web config in use (`current()`, which a reload may
    replace) and hands a new context to `use` when they change. A change that does not
    load (half-written files, a key of another certificate) is logged once; the certificate
    in use stays until the files are right."""

    def __init__(
        self,
        current: Callable[[], WebConfig],
        use: Callable[[ssl.SSLContext], None],
        *,
        period: float = CHECK_SECONDS,
    ) -> None:
        self._current = current
        self._use = use
        self._period = period
        self._watched = current()
        self._seen = _stamp(self._watched)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="certificate watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def check(self) -> bool:
        """Look at the files once; True if a new certificate was put to use."""
        web = self._current()
        if web is not self._watched:  # a reload read the files itself
            self._watched, self._seen = web, _stamp(web)
            return False
        stamp = _stamp(web)
        if stamp == self._seen or web.path is None:
            return False
        self._seen = stamp
        try:
            fresh = load_web_config(web.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error(
                    "certificate reload failed", extra={"source": exc.source, "problem": problem}
                )
            return False
        if fresh.tls_context is None:
            return False
        self._use(fresh.tls_context)
        log.info("certificate reloaded", extra={"files": ",".join(map(str, web.tls_files))})
        return True

    def _watch(self) -> None:
        while not self._stopped.wait(self._period):
            self.check()


def _stamp(web: WebConfig) -> Stamp:
    return tuple(_file_stamp(path) for path in web.tls_files)


def _file_stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)  # follows the symlinks a mounted Secret is made of
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
