"""Connections that trust the same CA bundle share one TLS context, made once even when the
first connections come at once, and made again when the bundle changes on disk."""

import os
import threading
from pathlib import Path

import certifi
import trustme

from exporter.ca_bundles import verifying_context


def test_concurrent_first_connections_share_one_context() -> None:
    bundle = certifi.where()
    start, found = threading.Barrier(16), []

    def connect() -> None:
        start.wait()
        found.append(verifying_context(bundle, None))

    threads = [threading.Thread(target=connect) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(context) for context in found}) == 1
    assert found[0].cert_store_stats()["x509_ca"] > 100  # the whole bundle is loaded


def test_a_changed_bundle_gets_a_new_context(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes())
    first = verifying_context(str(bundle), None)
    assert verifying_context(str(bundle), None) is first
    bundle.write_bytes(trustme.CA().cert_pem.bytes() + trustme.CA().cert_pem.bytes())
    os.utime(bundle, ns=(1, 1))  # a new mtime even on a coarse clock
    second = verifying_context(str(bundle), None)
    assert second is not first
    assert (first.cert_store_stats()["x509_ca"], second.cert_store_stats()["x509_ca"]) == (1, 2)
