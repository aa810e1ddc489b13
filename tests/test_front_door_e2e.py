"""The exporter behind its web config, the way users run it: the real CLI with TLS, client
certificates and basic auth, scraped by a real Prometheus and by plain clients."""

from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
import yaml

from exporter.simulator import BrazeSimulator
from tests.conftest import (
    KEY_ENV,
    config_data,
    required_tool,
    serving_exporter,
    wait_until,
    write_config,
)
from tests.test_prometheus_e2e import Prometheus

USER, PASSWORD = "prometheus", "s3cret-scrape-password"


class Certificates:
    """A server certificate for 127.0.0.1, a client CA with one client, and a stranger."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
        self.server_ca = self._write("server-ca.crt", server_ca.cert_pem.bytes())
        server = server_ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert = self._write("tls.crt", server.cert_chain_pems[0].bytes())
        self.server_key = self._write("tls.key", server.private_key_pem.bytes())
        self.client_ca = self._write("client-ca.crt", client_ca.cert_pem.bytes())
        client = client_ca.issue_cert("scraper@example.com")
        self.client_cert = self._write("client.crt", client.cert_chain_pems[0].bytes())
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        stranger = other_ca.issue_cert("stranger@example.com")
        self.stranger_cert = self._write("stranger.crt", stranger.cert_chain_pems[0].bytes())
        self.stranger_key = self._write("stranger.key", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def web_config(tmp_path: Path, *, client_certs: bool = False, users: bool = True) -> Path:
    tls: dict[str, str] = {"cert_file": "tls.crt", "key_file": "tls.key"}  # relative paths
    if client_certs:
        tls |= {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client-ca.crt"}
    data: dict[str, object] = {"tls_server_config": tls}
    if users:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        data["basic_auth_users"] = {USER: hashed}
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tls_exporter(sim: BrazeSimulator, tmp_path: Path, certs: Certificates) -> Iterator[str]:
    config = write_config(tmp_path / "config.yaml", config_data(sim.url, interval="1h"))
    web = web_config(tmp_path)
    with serving_exporter(config, KEY_ENV, "--web.config.file", str(web)) as (exporter, url):
        exporter.wait_for_log(r"msg=listening .*tls=True")
        yield url.replace("http://", "https://")


def test_prometheus_scrapes_over_tls_with_basic_auth(
    tls_exporter: str, certs: Certificates, tmp_path: Path
) -> None:
    prometheus_binary = required_tool("prometheus", "Debian package prometheus")
    target = tls_exporter.removeprefix("https://")
    tls_config = {"ca_file": certs.server_ca}
    jobs = [
        {  # as a user configures it
            "job_name": "braze-exporter",
            "scheme": "https",
            "tls_config": tls_config,
            "basic_auth": {"username": USER, "password": PASSWORD},
            "static_configs": [{"targets": [target]}],
        },
        {
            "job_name": "wrong-password",
            "scheme": "https",
            "tls_config": tls_config,
            "basic_auth": {"username": USER, "password": "guess"},
            "static_configs": [{"targets": [target]}],
        },
        {"job_name": "plain-http", "static_configs": [{"targets": [target]}]},
    ]
    prometheus_config = tmp_path / "prometheus.yml"
    prometheus_config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs})
    )
    prometheus = Prometheus(
        prometheus_binary, prometheus_config, tmp_path / "data", tmp_path / "prometheus.log"
    )
    try:
        wait_until(lambda: prometheus.query('up{job="braze-exporter"} == 1'), "up == 1", 30)
        wait_until(
            lambda: prometheus.query('braze_monthly_active_users{job="braze-exporter"}'),
            "MAU scraped over TLS",
            30,
        )
        wait_until(lambda: prometheus.query("count(up == 0) == 2"), "the others down", 30)
        targets = prometheus.api("targets")["activeTargets"]
        errors = {t["labels"]["job"]: t["lastError"] for t in targets}
        assert errors["braze-exporter"] == ""
        assert "401" in errors["wrong-password"]
        assert "400" in errors["plain-http"]
    finally:
        prometheus.stop()


def test_tls_refuses_plain_http_and_needs_the_users(tls_exporter: str, certs: Certificates) -> None:
    plain = requests.get(tls_exporter.replace("https://", "http://") + "/metrics", timeout=5)
    assert plain.status_code == 400
    assert "braze_" not in plain.text
    anonymous = requests.get(f"{tls_exporter}/metrics", verify=certs.server_ca, timeout=5)
    assert anonymous.status_code == 401
    wrong = requests.get(
        f"{tls_exporter}/metrics", verify=certs.server_ca, auth=(USER, "nope"), timeout=5
    )
    assert wrong.status_code == 401
    allowed = requests.get(
        f"{tls_exporter}/metrics", verify=certs.server_ca, auth=(USER, PASSWORD), timeout=5
    )
    assert allowed.status_code == 200
    assert "braze_exporter_build_info" in allowed.text
    for probe in ("/healthz", "/readyz"):  # open to Kubernetes probes, over TLS
        answer = requests.get(f"{tls_exporter}{probe}", verify=certs.server_ca, timeout=5)
        assert answer.status_code in (200, 503)
    with pytest.raises(requests.exceptions.SSLError):  # a server the client does not trust
        requests.get(f"{tls_exporter}/healthz", verify=True, timeout=5)


def test_a_client_certificate_is_required_and_checked(
    sim: BrazeSimulator, tmp_path: Path, certs: Certificates
) -> None:
    config = write_config(tmp_path / "config.yaml", config_data(sim.url, interval="1h"))
    web = web_config(tmp_path, client_certs=True, users=False)
    with serving_exporter(config, KEY_ENV, "--web.config.file", str(web)) as (exporter, url):
        exporter.wait_for_log(r'msg="poll cycle finished"')
        base = url.replace("http://", "https://")
        with_cert = requests.get(
            f"{base}/metrics",
            verify=certs.server_ca,
            cert=(certs.client_cert, certs.client_key),
            timeout=5,
        )
        assert with_cert.status_code == 200
        assert "braze_monthly_active_users" in with_cert.text
        for cert in (None, (certs.stranger_cert, certs.stranger_key)):
            with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
                requests.get(f"{base}/metrics", verify=certs.server_ca, cert=cert, timeout=5)
        assert exporter.process.poll() is None

        prometheus_binary = required_tool("prometheus", "Debian package prometheus")
        prometheus_config = tmp_path / "prometheus.yml"
        tls_config = {
            "ca_file": certs.server_ca,
            "cert_file": certs.client_cert,
            "key_file": certs.client_key,
        }
        job = {
            "job_name": "braze-exporter",
            "scheme": "https",
            "tls_config": tls_config,
            "static_configs": [{"targets": [base.removeprefix("https://")]}],
        }
        prometheus_config.write_text(
            yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]})
        )
        prometheus = Prometheus(
            prometheus_binary, prometheus_config, tmp_path / "data", tmp_path / "prom.log"
        )
        try:
            wait_until(lambda: prometheus.query("up == 1"), "up == 1 with a client cert", 30)
        finally:
            prometheus.stop()
