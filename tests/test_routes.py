"""The endpoints: metrics (HEAD, gzip, OpenMetrics, name[], the request cap), health, the
status page, reload, and the web config's basic auth and headers."""

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import bcrypt
import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import SecretStr

from exporter.config import validate_config
from exporter.exposition import Exposition
from exporter.exposition_cache import ExpositionCache
from exporter.reload import ReloadOutcome
from exporter.routes import Endpoints, ExporterApp
from exporter.server import ExporterServer
from exporter.webconfig import NO_WEB_CONFIG, WebConfig, load_web_config
from exporter.wiring import Exporter, build_exporter
from tests.conftest import day_point

PASSWORD = "correct horse battery staple"
OPEN_METRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Flags:
    healthy = True
    ready = False


def demo_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("demo_value", "A value.", registry=registry).set(7)
    return registry


@contextmanager
def serving(
    stored: CollectorRegistry | None = None,
    live: CollectorRegistry | None = None,
    *,
    web: WebConfig = NO_WEB_CONFIG,
    flags: Flags | None = None,
    reload: Callable[[], ReloadOutcome] = lambda: ReloadOutcome(True),
    max_requests: int = 40,
    metrics_path: str = "/metrics",
) -> Iterator[tuple[str, ExporterApp]]:
    flags = flags or Flags()
    app = ExporterApp(
        Endpoints(
            exposition=Exposition(
                ExpositionCache(stored or demo_registry(), threading.Event(), lambda: 0),
                live or CollectorRegistry(),
                max_requests=max_requests,
            ),
            is_healthy=lambda: flags.healthy,
            is_ready=lambda: flags.ready,
            status_page=lambda: "<!DOCTYPE html><title>status</title>",
            reload=reload,
            metrics_path=metrics_path,
        ),
        web,
    )
    server = ExporterServer(app, "127.0.0.1", 0, workers=8)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", app
    finally:
        server.stop()


def web_config(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return load_web_config(path)


def users_config(tmp_path: Path) -> WebConfig:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return web_config(
        tmp_path,
        f"basic_auth_users:\n  alice: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    )


def test_metrics_get_and_head_agree() -> None:
    with serving() as (url, _):
        plain = {"Accept-Encoding": "identity"}
        got = requests.get(f"{url}/metrics", headers=plain, timeout=5)
        head = requests.head(f"{url}/metrics", headers=plain, timeout=5)
        zipped = requests.head(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert got.status_code == head.status_code == 200
    assert "demo_value 7.0" in got.text
    assert head.content == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content))
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.content == b""


def test_metrics_gzip_when_accepted() -> None:
    with serving() as (url, _):
        raw = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, stream=True)
        body = raw.raw.read(decode_content=False)
        plain = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"})
    assert raw.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == plain.content
    assert "Content-Encoding" not in plain.headers


def test_openmetrics_when_asked_for() -> None:
    with serving() as (url, _):
        response = requests.get(f"{url}/metrics", headers={"Accept": OPEN_METRICS}, timeout=5)
        text = requests.get(f"{url}/metrics", timeout=5)
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert text.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def an_exporter() -> Exporter:
    config = validate_config(
        {
            "workspaces": [
                {
                    "name": "prod",
                    "url": "https://rest.iad-01.braze.com",
                    "api_key_env": "KEY",
                    "apps": [{"name": "ios", "id": "app-ios"}],
                }
            ],
            "poll": {"kpis": ["mau", "dau"]},
        },
        "test",
        {"KEY": "k" * 36},
    )
    exporter = build_exporter(config, {"prod": SecretStr("k" * 36)}, exporter_metrics=True)
    for series in exporter.store.snapshot().series:
        exporter.store.record_success(series, day_point(date(2026, 11, 27), 10), 1e9)
    exporter.telemetry.observe("prod", "mau", "200", 0.2)
    exporter.poller.close()
    return exporter


class Fixed(Collector):
    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def family_names(text: str) -> list[str]:
    return [family.name for family in text_string_to_metric_families(text)]


def test_name_filter_selects_every_family_alone() -> None:
    exporter = an_exporter()
    families = {family.name: family for family in exporter.registry.collect()}
    expected_names = {"braze_monthly_active_users", "process_resident_memory_bytes"}
    assert expected_names | {"python_gc_objects_collected", "braze_api_requests"} <= set(families)
    with serving(exporter.stored, exporter.live) as (url, _):
        for name, family in families.items():
            alone = family_names(generate_latest(Fixed(family)).decode())  # + _created, if any
            response = requests.get(f"{url}/metrics", params={"name[]": name}, timeout=5)
            assert family_names(response.text) == alone, name
            for sample in family.samples:  # a sample's name selects its family too
                response = requests.get(f"{url}/metrics?name[]={sample.name}", timeout=5)
                assert family_names(response.text) == alone, sample.name
        both = requests.get(
            f"{url}/metrics?name[]=braze_monthly_active_users&name[]=braze_daily_active_users"
        )
        assert set(family_names(both.text)) == {
            "braze_monthly_active_users",
            "braze_daily_active_users",
        }


def test_a_telemetry_path_of_ones_own() -> None:
    with serving(metrics_path="/custom/metrics") as (url, _):
        assert "demo_value" in requests.get(f"{url}/custom/metrics", timeout=5).text
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 404


class Blocking(Collector):
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.entered.set()
        self.release.wait(10)
        yield from ()


def test_scrapes_beyond_max_requests_get_503() -> None:
    registry = CollectorRegistry()
    blocking = Blocking()
    registry.register(blocking)
    with serving(registry, max_requests=1) as (url, _):
        first: list[requests.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(requests.get(f"{url}/metrics", timeout=10))
        )
        thread.start()
        assert blocking.entered.wait(5)
        second = requests.get(f"{url}/metrics", timeout=5)
        assert requests.get(f"{url}/healthz", timeout=5).ok  # not a scrape: not capped
        blocking.release.set()
        thread.join(10)
        third = requests.get(f"{url}/metrics", timeout=5)
    assert second.status_code == 503
    assert "--web.max-requests=1" in second.text
    assert first[0].status_code == third.status_code == 200


def test_health_and_readiness_follow_their_checks() -> None:
    flags = Flags()
    with serving(flags=flags) as (url, _):
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
        flags.ready = True
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
        flags.healthy = False
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 503
        assert requests.head(f"{url}/readyz", timeout=5).status_code == 200


def test_methods() -> None:
    with serving() as (url, _):
        refused = requests.delete(f"{url}/metrics", timeout=5)
        assert refused.status_code == 405
        assert refused.headers["Allow"] == "GET, HEAD"
        assert requests.post(f"{url}/", timeout=5).status_code == 405
        reload_get = requests.get(f"{url}/-/reload", timeout=5)
        assert reload_get.status_code == 405
        assert reload_get.headers["Allow"] == "POST"
        assert requests.get(f"{url}/nothing", timeout=5).status_code == 404


def test_status_page_is_html() -> None:
    with serving() as (url, _):
        page = requests.get(f"{url}/", timeout=5)
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.text.startswith("<!DOCTYPE html>")


def test_reload_endpoint_reports_the_outcome() -> None:
    outcomes = [ReloadOutcome(True), ReloadOutcome(False, ("config.yaml: poll.interval: bad",))]
    with serving(reload=outcomes.pop) as (url, _):
        failed = requests.post(f"{url}/-/reload", timeout=5)
        succeeded = requests.post(f"{url}/-/reload", timeout=5)
    assert failed.status_code == 500
    assert "poll.interval: bad" in failed.text
    assert "still running on the last good config" in failed.text
    assert succeeded.status_code == 200


def test_basic_auth_guards_everything_but_the_probes(tmp_path: Path) -> None:
    with serving(web=users_config(tmp_path)) as (url, _):
        for path in ("/metrics", "/", "/nothing"):
            anonymous = requests.get(f"{url}{path}", timeout=5)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        assert requests.post(f"{url}/-/reload", timeout=5).status_code == 401
        for path in ("/healthz", "/readyz"):
            assert requests.get(f"{url}{path}", timeout=5).status_code in (200, 503)
        allowed = requests.get(f"{url}/metrics", auth=("alice", PASSWORD), timeout=5)
        assert allowed.status_code == 200
        assert "demo_value" in allowed.text
        assert allowed.headers["X-Frame-Options"] == "deny"


def test_wrong_password_and_unknown_user_look_the_same(tmp_path: Path) -> None:
    with serving(web=users_config(tmp_path)) as (url, _):
        wrong = requests.get(f"{url}/metrics", auth=("alice", "wrong"), timeout=5)
        unknown = requests.get(f"{url}/metrics", auth=("mallory", PASSWORD), timeout=5)
        garbage = requests.get(f"{url}/metrics", headers={"Authorization": "Basic %%%"})
    assert wrong.status_code == unknown.status_code == garbage.status_code == 401
    assert wrong.content == unknown.content == garbage.content
    strip = ("Date",)
    assert {k: v for k, v in wrong.headers.items() if k not in strip} == {
        k: v for k, v in unknown.headers.items() if k not in strip
    }


def test_a_new_web_config_applies_to_the_next_request(tmp_path: Path) -> None:
    with serving() as (url, app):
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 200
        app.set_web_config(users_config(tmp_path))
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
        app.set_web_config(NO_WEB_CONFIG)
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/"])
def test_configured_headers_on_every_answer(tmp_path: Path, path: str) -> None:
    web = web_config(
        tmp_path, "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    with serving(web=web) as (url, _):
        assert (
            requests.get(f"{url}{path}", timeout=5).headers["X-Content-Type-Options"] == "nosniff"
        )


def test_stored_and_live_families_make_one_exposition_in_each_format() -> None:
    live = CollectorRegistry()
    Gauge("live_value", "Read on every scrape.", registry=live).set(3)
    with serving(demo_registry(), live) as (url, _):
        for accept in ("", OPEN_METRICS):
            headers = {"Accept": accept, "Accept-Encoding": "identity"}
            plain = requests.get(f"{url}/metrics", headers=headers, timeout=5)
            zipped = requests.get(
                f"{url}/metrics", headers={**headers, "Accept-Encoding": "gzip"}, stream=True
            )
            body = zipped.raw.read(decode_content=False)
            assert gzip.decompress(body) == plain.content
            if accept:  # the strict parser: one "# EOF", at the very end
                parsed = openmetrics_families(plain.text)  # type: ignore[no-untyped-call]
                assert plain.text.count("# EOF") == 1
            else:
                parsed = text_string_to_metric_families(plain.text)
            values = {s.name: s.value for family in parsed for s in family.samples}
            assert values == {"demo_value": 7, "live_value": 3}, accept
