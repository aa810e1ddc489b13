"""Reloading a running exporter (the real CLI against the simulator): POST /-/reload and
SIGHUP, apps added and removed, a broken config kept out, a rotated key, the web config."""

import signal
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import BrazeSimulator
from tests.conftest import (
    KEY_ENV,
    PROD_KEY,
    ExporterProcess,
    config_data,
    serving_exporter,
    wait_until,
    write_config,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ROTATED_KEY = "prod-key-rotated-ffffffffffff"


def samples(url: str, **kwargs: object) -> Samples:
    text = requests.get(f"{url}/metrics", timeout=5, **kwargs).text  # type: ignore[arg-type]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def mau(found: Samples, workspace: str, app: str) -> float | None:
    return value(found, "braze_monthly_active_users", workspace=workspace, app=app)


def two_workspaces(url: str, prod_apps: list[str], stage_apps: list[str]) -> dict[str, object]:
    data = config_data(url)
    ids = {"ios": "app-ios", "web": "app-web", "stage-ios": "app-stage"}
    workspaces: list[dict[str, object]] = data["workspaces"]  # type: ignore[assignment]
    workspaces[0]["apps"] = [{"name": a, "id": ids[a]} for a in prod_apps]
    workspaces[1]["apps"] = [{"name": "ios", "id": ids[a]} for a in stage_apps]
    return data


@pytest.fixture
def running(sim: BrazeSimulator, tmp_path: Path) -> Iterator[tuple[ExporterProcess, str, Path]]:
    config = write_config(tmp_path / "config.yaml", two_workspaces(sim.url, ["ios"], ["stage-ios"]))
    with serving_exporter(config, KEY_ENV) as (exporter, url):
        exporter.wait_for_log(r'msg="poll cycle finished"')
        yield exporter, url, config


def requests_for(sim: BrazeSimulator, app_id: str) -> int:
    return sum(1 for r in sim.requests if r.params.get("app_id") == app_id)


def test_reload_adds_and_removes_series_and_keeps_the_others(
    sim: BrazeSimulator, running: tuple[ExporterProcess, str, Path]
) -> None:
    exporter, url, config = running
    before = samples(url)
    assert mau(before, "stage", "ios") is not None
    assert mau(before, "prod", "web") is None
    ios_polls = requests_for(sim, "app-ios")
    loaded_at = value(before, "braze_exporter_config_last_reload_success_timestamp_seconds")

    write_config(config, two_workspaces(sim.url, ["ios", "web"], []))
    reloaded = requests.post(f"{url}/-/reload", timeout=10)
    assert reloaded.status_code == 200, reloaded.text

    after = samples(url)  # removed at once
    assert mau(after, "stage", "ios") is None
    assert value(after, "braze_app_info", workspace="stage", app="ios", app_id="app-stage") is None
    # added, and polled at once (the interval is an hour)
    wait_until(lambda: mau(samples(url), "prod", "web") is not None, "prod/web polled", 10)
    exporter.wait_for_log(r'msg="poll of new series finished"')
    final = samples(url)
    assert mau(final, "prod", "web") == sim.expected_value(
        PROD_KEY, "mau", "app-web", sim.newest_complete(PROD_KEY, "mau")
    )
    # unchanged series kept their values and were not polled again
    assert mau(final, "prod", "ios") == mau(before, "prod", "ios")
    for name in ("braze_last_success_timestamp_seconds", "braze_kpi_point_timestamp_seconds"):
        labels = {"workspace": "prod", "app": "ios", "kpi": "mau"}
        assert value(final, name, **labels) == value(before, name, **labels)
    assert requests_for(sim, "app-ios") == ios_polls
    assert value(final, "braze_exporter_config_last_reload_successful") == 1
    reloaded_at = value(final, "braze_exporter_config_last_reload_success_timestamp_seconds")
    assert loaded_at is not None and reloaded_at is not None and reloaded_at > loaded_at
    assert exporter.process.poll() is None


def test_sighup_reloads_and_never_kills(
    sim: BrazeSimulator, running: tuple[ExporterProcess, str, Path]
) -> None:
    exporter, url, config = running
    write_config(config, two_workspaces(sim.url, ["ios"], []))
    exporter.process.send_signal(signal.SIGHUP)
    exporter.wait_for_log(r'msg="config reloaded" trigger=SIGHUP')
    assert mau(samples(url), "stage", "ios") is None
    exporter.process.send_signal(signal.SIGHUP)  # again, with nothing changed
    wait_until(
        lambda: exporter.stderr.count('msg="config reloaded" trigger=SIGHUP') == 2, "reload", 10
    )
    assert exporter.process.poll() is None
    assert requests.get(f"{url}/healthz", timeout=5).ok


def test_a_broken_config_keeps_the_last_good_one(
    sim: BrazeSimulator, running: tuple[ExporterProcess, str, Path]
) -> None:
    exporter, url, config = running
    before = samples(url)
    good = config.read_text()
    config.write_text(good.replace("interval: 1h", "interval: soon").replace("ios", "i os"))
    failed = requests.post(f"{url}/-/reload", timeout=10)
    assert failed.status_code == 500
    assert "still running on the last good config" in failed.text
    assert "poll.interval" in failed.text
    assert PROD_KEY not in failed.text
    exporter.wait_for_log(r'msg="reload failed" trigger=http .*problem=.*poll\.interval')
    exporter.process.send_signal(signal.SIGHUP)
    exporter.wait_for_log(r'msg="reload failed" trigger=SIGHUP')
    after = samples(url)
    assert value(after, "braze_exporter_config_last_reload_successful") == 0
    assert {k: v for k, v in after.items() if k[0].startswith("braze_m")} == {
        k: v for k, v in before.items() if k[0].startswith("braze_m")
    }
    assert exporter.process.poll() is None

    config.write_text(good)
    assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
    assert value(samples(url), "braze_exporter_config_last_reload_successful") == 1


def test_a_rotated_key_is_used_from_the_next_request_on(
    sim: BrazeSimulator, tmp_path: Path
) -> None:
    key_file = tmp_path / "prod.key"
    key_file.write_text(PROD_KEY)
    data = config_data(sim.url, interval="5s", timeout="2s")
    workspaces: list[dict[str, object]] = data["workspaces"]  # type: ignore[assignment]
    del workspaces[0]["api_key_env"]
    workspaces[0]["api_key_file"] = str(key_file)
    config = write_config(tmp_path / "config.yaml", data)
    with serving_exporter(config, KEY_ENV) as (exporter, url):
        exporter.wait_for_log(r'msg="poll cycle finished"')
        sim.rotate_key(PROD_KEY, ROTATED_KEY)  # Braze now refuses the old key
        key_file.write_text(ROTATED_KEY)
        assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
        sent = len(sim.requests)
        wait_until(
            lambda: len(exporter.stderr.split('msg="poll cycle finished"')) > 2, "a cycle", 15
        )
        after = sim.requests[sent:]
        prod = [r for r in after if r.api_key in (PROD_KEY, ROTATED_KEY)]
        assert prod, "no request for prod after the reload"
        assert {r.api_key for r in prod} == {ROTATED_KEY}
        assert {r.status for r in prod} == {200}
        found = samples(url)
        assert value(found, "braze_last_poll_success", workspace="prod", app="ios", kpi="mau") == 1
        page = requests.get(f"{url}/", timeout=5).text
    for text in (exporter.stderr, page):
        assert ROTATED_KEY not in text
        assert PROD_KEY not in text


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_reload_changes_the_users(sim: BrazeSimulator, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{hashed('first')}'\n")
    config = write_config(tmp_path / "config.yaml", config_data(sim.url))
    with serving_exporter(config, KEY_ENV, "--web.config.file", str(web)) as (_, url):
        assert requests.get(f"{url}/metrics", auth=("alice", "first"), timeout=5).ok
        web.write_text(f"basic_auth_users:\n  bob: '{hashed('second')}'\n")
        reloaded = requests.post(f"{url}/-/reload", auth=("alice", "first"), timeout=10)
        assert reloaded.status_code == 200
        assert requests.get(f"{url}/metrics", auth=("alice", "first")).status_code == 401
        assert requests.get(f"{url}/metrics", auth=("bob", "second"), timeout=5).ok
        web.write_text("basic_auth_users:\n  bob: not-a-hash\n")
        refused = requests.post(f"{url}/-/reload", auth=("bob", "second"), timeout=10)
        assert refused.status_code == 500
        assert "basic_auth_users.bob" in refused.text
        assert requests.get(f"{url}/metrics", auth=("bob", "second"), timeout=5).ok


def test_tls_cannot_be_switched_on_by_a_reload(sim: BrazeSimulator, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("{}\n")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    config = write_config(tmp_path / "config.yaml", config_data(sim.url))
    with serving_exporter(config, KEY_ENV, "--web.config.file", str(web)) as (_, url):
        web.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
        refused = requests.post(f"{url}/-/reload", timeout=10)
        assert refused.status_code == 500
        assert "turning TLS on or off takes a restart" in refused.text
        assert requests.get(f"{url}/metrics", timeout=5).ok
