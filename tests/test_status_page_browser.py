"""The status page as people see it: the real exporter polling the simulator, its page at /
loaded in a real headless Chromium (through Selenium and chromedriver) with JavaScript off.

Needs Debian's chromium and chromium-driver, and Selenium; skipped without the two programs,
except under CI. One browser serves the whole module: starting it takes most of the time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from exporter.config import validate_config
from exporter.series import series_of
from exporter.simulator import BrazeSimulator, Fault
from tests.conftest import (
    KEY_ENV,
    PROD_KEY,
    STAGE_KEY,
    config_data,
    required_tool,
    serving_exporter,
    write_config,
)

pytestmark = pytest.mark.browser  # needs chromium and chromedriver

CHROMIUM_ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
BLOCK = 2  # Chromium's content setting "block"
KEYS = {"prod": PROD_KEY, "stage": STAGE_KEY}
APP_IDS = {("prod", "ios"): "app-ios", ("prod", "web"): "app-web", ("stage", "ios"): "app-stage"}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = required_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = required_tool("chromium", "chromium")
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)  # --no-sandbox: CI runs as root
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": BLOCK}
    )
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_status_page_in_a_browser(
    browser: webdriver.Chrome, sim: BrazeSimulator, tmp_path: Path
) -> None:
    sim.inject(Fault(status=500, kpi="dau", app_id="app-web"))
    data = config_data(sim.url, kpis=["mau", "dau"])
    with serving_exporter(write_config(tmp_path / "config.yaml", data), KEY_ENV) as (exporter, url):
        exporter.wait_for_log('msg="poll cycle finished"', timeout=30)
        check_status_page(browser, f"{url}/", sim, data)


def check_status_page(
    browser: webdriver.Chrome, url: str, sim: BrazeSimulator, data: Mapping[str, object]
) -> None:
    """The page at `url` after a first cycle with `data` as config, prod/web/dau failing."""
    browser.get(url)
    assert browser.title == "Braze Exporter"
    assert not browser.find_elements(By.TAG_NAME, "script")
    assert PROD_KEY not in browser.page_source
    assert STAGE_KEY not in browser.page_source
    instances = browser.find_elements(By.CSS_SELECTOR, "#workspaces td.instance")
    assert [cell.text for cell in instances] == [sim.url, sim.url]
    rows = [
        {
            **{
                name: row.get_attribute(f"data-{name}") or ""
                for name in ("workspace", "app", "kpi")
            },
            **{
                name: row.find_element(By.CSS_SELECTOR, f"td.{name}").text
                for name in ("value", "period", "result", "error")
            },
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "#series tbody tr")
    ]
    planned = series_of(validate_config(data, environ=KEY_ENV))
    assert [(r["workspace"], r["app"], r["kpi"]) for r in rows] == [
        (s.workspace, s.app or "", s.kpi.name) for s in planned
    ]
    for row in rows:
        if (row["workspace"], row["app"], row["kpi"]) == ("prod", "web", "dau"):
            assert row["result"].startswith("failed "), row
            assert "status=500" in row["error"]
            assert row["value"] == "none yet"
            continue
        key = KEYS[row["workspace"]]
        app_id = APP_IDS.get((row["workspace"], row["app"]))  # None: whole workspace
        day = sim.newest_complete(key, row["kpi"])
        assert row["result"].startswith("succeeded "), row
        assert row["error"] == ""
        assert row["period"] == day.isoformat()
        assert row["value"] == f"{sim.expected_value(key, row['kpi'], app_id, day):,}"
