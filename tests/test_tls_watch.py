"""Renewed certificates are picked up without a reload."""

import logging
import ssl
from pathlib import Path

import pytest
import requests
import trustme

from exporter.server import ExporterServer
from exporter.tls_watch import CertificateWatch
from exporter.webconfig import NO_WEB_CONFIG, WebConfig, load_web_config
from tests.test_server import hello


def issue(ca: trustme.CA, directory: Path) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    cert.private_key_pem.write_to_path(str(directory / "tls.key"))


def test_a_renewed_certificate_serves_new_connections(tmp_path: Path) -> None:
    first, renewed = trustme.CA(), trustme.CA()
    issue(first, tmp_path)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    web = load_web_config(config)
    assert web.tls_context is not None
    server = ExporterServer(hello, "127.0.0.1", 0, workers=2, tls_context=web.tls_context)
    server.start()
    url = f"https://127.0.0.1:{server.port}/"
    watch = CertificateWatch(lambda: web, server.set_tls_context, period=60)
    try:
        assert not watch.check()  # nothing changed
        issue(renewed, tmp_path)
        assert watch.check()
        assert not watch.check()  # once per change
        with renewed.cert_pem.tempfile() as ca_file:
            assert requests.get(url, verify=ca_file, timeout=5).ok
        with first.cert_pem.tempfile() as ca_file, pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=ca_file, timeout=5)
    finally:
        server.stop()


def test_files_that_do_not_load_keep_the_certificate_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    issue(ca, tmp_path)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    web = load_web_config(config)
    used: list[ssl.SSLContext] = []
    watch = CertificateWatch(lambda: web, used.append, period=60)
    other = ca.issue_cert("127.0.0.1")  # a key that does not belong to tls.crt
    other.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    with caplog.at_level(logging.ERROR):
        assert not watch.check()
        assert not watch.check()
    failures = [r for r in caplog.records if r.getMessage() == "certificate reload failed"]
    assert len(failures) == 1
    assert "key_file" in str(vars(failures[0])["problem"])
    assert used == []


def test_a_reloaded_web_config_becomes_the_one_watched(tmp_path: Path) -> None:
    issue(trustme.CA(), tmp_path)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    current: list[WebConfig] = [load_web_config(config)]
    used: list[ssl.SSLContext] = []
    watch = CertificateWatch(lambda: current[-1], used.append, period=60)
    issue(trustme.CA(), tmp_path)
    current.append(load_web_config(config))  # a reload read the new files already
    assert not watch.check()
    current.append(NO_WEB_CONFIG)
    assert not watch.check()
    assert used == []
