"""The TLS contexts the Braze client verifies with: one per CA bundle, shared by connections.

urllib3 makes each new connection a context of its own and loads the CA bundle into it, 40 ms
and 0.7 MB apiece with certifi's bundle; the pool keeps up to `poll.concurrency` connections
alive, each holding its copy (11 MB for 16). Connections that trust the same bundle share one
context here instead. A bundle file that changes on disk gets a new context for the
connections made from then on.
"""

from __future__ import annotations

import os
import ssl
import threading

from urllib3.util.ssl_ import create_urllib3_context

_lock = threading.Lock()  # concurrent first connections would each load the bundle
_contexts: dict[tuple[str | None, str | None], tuple[tuple[int, int] | None, ssl.SSLContext]] = {}


def verifying_context(ca_certs: str | None, ca_cert_dir: str | None) -> ssl.SSLContext:
    """urllib3's context for verified connections, trusting exactly this bundle or folder."""
    version = _version(ca_certs)
    with _lock:
        held = _contexts.get((ca_certs, ca_cert_dir))
        if held is not None and held[0] == version:
            return held[1]
        context = create_urllib3_context()
        context.load_verify_locations(cafile=ca_certs, capath=ca_cert_dir)
        _contexts[ca_certs, ca_cert_dir] = version, context
        return context


def _version(path: str | None) -> tuple[int, int] | None:
    """What tells one content of the file from another without reading it."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:  # load_verify_locations will say what is wrong with it
        return None
    return status.st_mtime_ns, status.st_size
