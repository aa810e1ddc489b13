"""The guard of what the exporter costs Braze, run on the real CLI against the simulator: one
request per series in a healthy cycle, and none for any scrape or page, in any format."""

from pathlib import Path

import requests

from exporter.simulator import BrazeSimulator
from tests.conftest import KEY_ENV, config_data, serving_exporter, write_config
from tests.test_cli import samples, wait_until_ready

SERIES = 10  # prod: ios, web and the whole workspace; stage: ios and the whole; x 2 kinds
PAGES = [
    ("GET", "/metrics", {}),
    ("GET", "/metrics", {"Accept-Encoding": "gzip"}),
    ("GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
    ("GET", "/metrics?name[]=braze_monthly_active_users", {}),
    ("HEAD", "/metrics", {}),
    ("GET", "/", {}),
    ("GET", "/healthz", {}),
    ("GET", "/readyz", {}),
]


def test_one_request_per_series_per_cycle_and_none_per_scrape(
    sim: BrazeSimulator, tmp_path: Path
) -> None:
    data = config_data(sim.url, interval="1h", kpis=["mau", "dau"])
    config = write_config(tmp_path / "config.yaml", data)
    with serving_exporter(config, KEY_ENV) as (_, url):
        wait_until_ready(url)  # the first cycle is over
        after_cycle = len(sim.requests)
        for _ in range(20):
            for method, path, headers in PAGES:
                assert requests.request(method, url + path, headers=headers, timeout=5).ok
        after_scrapes = len(sim.requests)
        found = samples(requests.get(f"{url}/metrics", timeout=5).text)
    assert after_cycle == SERIES
    assert after_scrapes == after_cycle
    sent = sum(v for (name, _), v in found.items() if name == "braze_api_requests_total")
    assert sent == SERIES
