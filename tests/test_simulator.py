"""The Braze simulator, exercised over real HTTP on a loopback port."""

from __future__ import annotations

import datetime
import http.client
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import requests

from exporter.simulator import (
    ALL_PERMISSIONS,
    DEMO_WORKSPACES,
    KPI_VALUE_KEYS,
    BrazeSimulator,
    Fault,
    SimApp,
    SimWorkspace,
    main,
)

KEY = "test-key"
OTHER_KEY = "other-key"
IOS = SimApp("aaaaaaaa-0000-4000-8000-000000000001", "ios", 1_000_000)
ANDROID = SimApp("aaaaaaaa-0000-4000-8000-000000000002", "android", 600_000)
OTHER_APP = SimApp("bbbbbbbb-0000-4000-8000-000000000001", "web", 5_000)
WORKSPACE = SimWorkspace("main", KEY, (IOS, ANDROID))
OTHER_WORKSPACE = SimWorkspace("other", OTHER_KEY, (OTHER_APP,))
NOW = datetime.datetime(2026, 11, 27, 10, 30, tzinfo=datetime.timezone.utc)
NEXT_HOUR = datetime.datetime(2026, 11, 27, 11, 0, tzinfo=datetime.timezone.utc)
ENDING_AT = "2026-11-20T12:00:00Z"

Params = Mapping[str, "str | int"]


class FakeClock:
    def __init__(self, start: datetime.datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[BrazeSimulator]:
    with BrazeSimulator([WORKSPACE, OTHER_WORKSPACE], clock=clock) as simulator:
        yield simulator


def fetch(
    sim: BrazeSimulator,
    kpi: str = "mau",
    params: Params | None = None,
    *,
    key: str | None = KEY,
    path: str | None = None,
) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    url = sim.url + (path or f"/kpi/{kpi}/data_series")
    query: Params = {"length": 7, "ending_at": ENDING_AT} if params is None else params
    return requests.get(url, params=query, headers=headers, timeout=5)


def day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# --- the normal answer ---------------------------------------------------------------


@pytest.mark.parametrize("kpi", sorted(KPI_VALUE_KEYS))
def test_each_kpi_answers_one_point_per_day_before_ending_at(sim: BrazeSimulator, kpi: str) -> None:
    response = fetch(sim, kpi, {"length": 7, "ending_at": ENDING_AT, "app_id": IOS.app_id})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == "success"
    assert [point["time"] for point in body["data"]] == [f"2026-11-{d}" for d in range(13, 20)]
    for point in body["data"]:
        assert set(point) == {"time", KPI_VALUE_KEYS[kpi]}
        expected = sim.expected_value(KEY, kpi, IOS.app_id, day(point["time"]))
        assert point[KPI_VALUE_KEYS[kpi]] == expected


def test_without_ending_at_the_series_ends_the_day_before_now(sim: BrazeSimulator) -> None:
    data = fetch(sim, params={"length": 3}).json()["data"]

    assert sim.newest_day() == datetime.date(2026, 11, 26)
    assert [point["time"] for point in data] == ["2026-11-24", "2026-11-25", "2026-11-26"]


@pytest.mark.parametrize(
    ("ending_at", "newest"),
    [
        ("2026-11-20", "2026-11-19"),
        ("2026-11-20T00:00:00.000Z", "2026-11-19"),
        ("2026-11-20T23:59:59+02:00", "2026-11-19"),
        ("2018-06-28T23:59:59-05:00", "2018-06-28"),  # 04:59 UTC on the 29th
    ],
)
def test_ending_at_accepts_dates_z_and_offsets(
    sim: BrazeSimulator, ending_at: str, newest: str
) -> None:
    data = fetch(sim, params={"length": 1, "ending_at": ending_at}).json()["data"]

    assert data[0]["time"] == newest
    as_datetime = datetime.datetime.fromisoformat(ending_at.replace("Z", "+00:00"))  # 3.10
    assert sim.newest_day(as_datetime) == day(newest)


@pytest.mark.parametrize("length", [1, 100])
def test_length_bounds_are_inclusive(sim: BrazeSimulator, length: int) -> None:
    response = fetch(sim, params={"length": length})

    assert response.status_code == 200
    assert len(response.json()["data"]) == length


def test_datetime_time_format(clock: FakeClock) -> None:
    with BrazeSimulator([WORKSPACE], clock=clock, time_format="datetime") as sim:
        data = fetch(sim, params={"length": 1, "ending_at": ENDING_AT}).json()["data"]

    assert data[0]["time"] == "2026-11-19T00:00:00.000Z"


def test_unknown_time_format_is_refused() -> None:
    with pytest.raises(ValueError, match="time_format"):
        BrazeSimulator([WORKSPACE], time_format="epoch")


def test_whole_workspace_counts_overlapping_users_once(sim: BrazeSimulator) -> None:
    newest = sim.newest_day()
    for back in range(30):
        when = newest - datetime.timedelta(days=back)
        apps_sum = sum(sim.expected_value(KEY, "mau", app.app_id, when) for app in WORKSPACE.apps)
        whole = sim.expected_value(KEY, "mau", None, when)
        assert whole != apps_sum
        assert 0.7 * apps_sum <= whole <= apps_sum

    served = fetch(sim, params={"length": 1}).json()["data"][0]["mau"]
    assert served == sim.expected_value(KEY, "mau", None, newest)


@pytest.mark.parametrize("kpi", ["mau", "dau"])
def test_values_have_a_weekly_rhythm(sim: BrazeSimulator, kpi: str) -> None:
    params: Params = {"length": 14, "ending_at": ENDING_AT, "app_id": IOS.app_id}
    values = [point[kpi] for point in fetch(sim, kpi, params).json()["data"]]

    assert len(set(values)) > 1
    assert values != sorted(values)
    assert values != sorted(values, reverse=True)


def test_values_are_realistic_shares_of_mau(sim: BrazeSimulator) -> None:
    newest = sim.newest_day()
    for back in range(30):
        when = newest - datetime.timedelta(days=back)
        mau = sim.expected_value(KEY, "mau", IOS.app_id, when)
        assert 0.9 * IOS.base_mau < mau < 1.3 * IOS.base_mau
        assert 0.15 < sim.expected_value(KEY, "dau", IOS.app_id, when) / mau < 0.25
        assert 0.007 < sim.expected_value(KEY, "new_users", IOS.app_id, when) / mau < 0.013
        assert 0.0015 < sim.expected_value(KEY, "uninstalls", IOS.app_id, when) / mau < 0.0025


def test_values_are_deterministic_across_instances(sim: BrazeSimulator, clock: FakeClock) -> None:
    params: Params = {"length": 30, "ending_at": ENDING_AT, "app_id": ANDROID.app_id}
    with BrazeSimulator([WORKSPACE], clock=clock) as twin:
        assert fetch(twin, "dau", params).json() == fetch(sim, "dau", params).json()


def test_expected_value_refuses_unknown_keys_kpis_and_apps(sim: BrazeSimulator) -> None:
    when = datetime.date(2026, 11, 1)
    with pytest.raises(ValueError):
        sim.expected_value("nobody", "mau", None, when)
    with pytest.raises(ValueError):
        sim.expected_value(KEY, "sessions", None, when)
    with pytest.raises(ValueError):
        sim.expected_value(KEY, "mau", OTHER_APP.app_id, when)


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Token {KEY}", "Bearer", f'Bearer "{KEY}"'],
)
def test_a_missing_or_wrong_key_is_refused_without_echo(
    sim: BrazeSimulator, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(
        f"{sim.url}/kpi/mau/data_series", params={"length": 1}, headers=headers, timeout=5
    )

    assert response.status_code == 401
    assert response.json() == {"message": "Invalid API key"}
    assert "wrong-key" not in response.text
    assert KEY not in response.text
    assert not any(name.lower().startswith("x-ratelimit") for name in response.headers)


def test_a_key_without_the_kpi_permission_gets_403(clock: FakeClock) -> None:
    limited = SimWorkspace("limited", KEY, (IOS,), permissions=frozenset({"kpi.mau.data_series"}))
    with BrazeSimulator([limited], clock=clock) as sim:
        assert fetch(sim, "mau").status_code == 200
        refused = fetch(sim, "dau")

    assert refused.status_code == 403
    assert "kpi.dau.data_series" in refused.json()["message"]
    assert frozenset({"kpi.dau.data_series"}) < ALL_PERMISSIONS


@pytest.mark.parametrize("length", ["0", "101", "x", "1.5", "", "-1", None])
def test_a_bad_or_missing_length_gets_400(sim: BrazeSimulator, length: str | None) -> None:
    params = {} if length is None else {"length": length}
    response = fetch(sim, params=params)

    assert response.status_code == 400
    assert "length" in response.json()["message"]


@pytest.mark.parametrize("app_id", ["not-an-app", OTHER_APP.app_id, ""])
def test_an_app_id_outside_the_workspace_gets_400(sim: BrazeSimulator, app_id: str) -> None:
    response = fetch(sim, params={"length": 1, "app_id": app_id})

    assert response.status_code == 400
    assert "app_id" in response.json()["message"]


@pytest.mark.parametrize("ending_at", ["yesterday", "2026-13-01", "2026-11-20T25:00:00Z", ""])
def test_an_unparseable_ending_at_gets_400(sim: BrazeSimulator, ending_at: str) -> None:
    response = fetch(sim, params={"length": 1, "ending_at": ending_at})

    assert response.status_code == 400
    assert "ending_at" in response.json()["message"]


@pytest.mark.parametrize(
    "path", ["/kpi/sessions/data_series", "/kpi/mau", "/kpi/mau/data_series/x", "/"]
)
def test_an_unknown_path_gets_404(sim: BrazeSimulator, path: str) -> None:
    response = fetch(sim, path=path)

    assert response.status_code == 404
    assert response.json()["message"]


def test_a_post_gets_405(sim: BrazeSimulator) -> None:
    response = requests.post(
        f"{sim.url}/kpi/mau/data_series",
        data=b'{"length": 1}',
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )

    assert response.status_code == 405
    assert response.json()["message"]


# --- rate limits -----------------------------------------------------------------------


def test_every_authenticated_answer_carries_rate_limit_headers(sim: BrazeSimulator) -> None:
    first = fetch(sim)
    refused = fetch(sim, params={"length": 0})

    assert first.headers["X-RateLimit-Limit"] == "250000"
    assert first.headers["X-RateLimit-Remaining"] == "249999"
    assert first.headers["X-RateLimit-Reset"] == str(int(NEXT_HOUR.timestamp()))
    assert refused.status_code == 400
    assert refused.headers["X-RateLimit-Remaining"] == "249998"
    assert "X-RateLimit-Limit" in set(first.headers.keys())  # the spelling on the wire


def test_rate_limit_headers_can_arrive_lower_case(clock: FakeClock) -> None:
    with BrazeSimulator([WORKSPACE], clock=clock, lowercase_headers=True) as sim:
        names = set(fetch(sim).headers.keys())

    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= names
    assert "X-RateLimit-Limit" not in names


def test_an_exhausted_bucket_answers_429_until_the_next_clock_hour(clock: FakeClock) -> None:
    small = SimWorkspace("small", KEY, (IOS,), rate_limit=2)
    with BrazeSimulator([small, OTHER_WORKSPACE], clock=clock) as sim:
        assert [fetch(sim).headers["X-RateLimit-Remaining"] for _ in range(2)] == ["1", "0"]
        limited = fetch(sim)
        other_workspace = fetch(sim, key=OTHER_KEY)
        clock.now = NEXT_HOUR.timestamp()
        after_reset = fetch(sim)

    assert limited.status_code == 429
    assert limited.json() == {"message": "Rate limit exceeded"}
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert other_workspace.status_code == 200
    assert after_reset.status_code == 200
    assert after_reset.headers["X-RateLimit-Remaining"] == "1"
    assert after_reset.headers["X-RateLimit-Reset"] == str(int(NEXT_HOUR.timestamp()) + 3600)


def test_the_remaining_count_can_be_set(sim: BrazeSimulator) -> None:
    sim.set_rate_limit_remaining(KEY, 1)
    assert fetch(sim).headers["X-RateLimit-Remaining"] == "0"
    assert fetch(sim).status_code == 429


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(status=503), "Service Unavailable"),
        (Fault(status=429), "Rate limit exceeded"),
        (Fault(status=500, message="boom"), "boom"),
        (Fault(status=202), "queued"),
    ],
)
def test_a_status_fault_answers_a_braze_style_error(
    sim: BrazeSimulator, fault: Fault, message: str
) -> None:
    sim.inject(fault)
    response = fetch(sim)

    assert response.status_code == fault.status
    assert response.json() == {"message": message}
    assert response.headers["X-RateLimit-Remaining"] == "249999"  # it still counted


def test_a_message_fault_answers_200_without_data(sim: BrazeSimulator) -> None:
    sim.inject(Fault(message="error"))
    response = fetch(sim)

    assert response.status_code == 200
    assert response.json() == {"message": "error"}


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault(body=b"{not json"), 200), (Fault(status=502, body=b"<html>bad gateway</html>"), 502)],
)
def test_a_body_fault_sends_the_raw_body(sim: BrazeSimulator, fault: Fault, status: int) -> None:
    sim.inject(fault)
    response = fetch(sim)

    assert response.status_code == status
    assert response.content == fault.body
    assert response.headers["Content-Type"] == "application/json"


def test_a_data_fault_sends_the_data_verbatim(sim: BrazeSimulator) -> None:
    data: list[dict[str, object]] = [
        {"time": "2026-11-19T09:13:40.359Z", "mau": 5},
        {"time": "2026-11-18", "mau": -1},
        {"time": "2026-11-17", "mau": None},
    ]
    sim.inject(Fault(data=data))

    assert fetch(sim).json() == {"message": "success", "data": data}


def test_a_delay_fault_answers_normally_after_the_delay(sim: BrazeSimulator) -> None:
    sim.inject(Fault(delay=0.2))
    started = time.monotonic()
    response = fetch(sim)

    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert len(response.json()["data"]) == 7


def test_a_drop_fault_closes_the_connection_without_answer(sim: BrazeSimulator) -> None:
    sim.inject(Fault(drop_connection=True, times=1))
    with pytest.raises(requests.ConnectionError):
        fetch(sim)

    assert fetch(sim).status_code == 200
    assert [request.status for request in sim.requests] == [0, 200]


def test_fault_headers_override_the_normal_ones(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=429, headers={"Retry-After": "3", "x-ratelimit-remaining": ""}))
    response = fetch(sim)

    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == ""
    assert response.headers["X-RateLimit-Limit"] == "250000"


def test_a_fault_with_times_expires(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=500, times=2))

    assert [fetch(sim).status_code for _ in range(3)] == [500, 500, 200]


def test_faults_apply_to_authenticated_requests_only(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=503))

    assert fetch(sim, key="wrong").status_code == 401


@pytest.mark.parametrize(
    ("fault", "faulted"),
    [
        (Fault(status=500, kpi="dau"), {"dau"}),
        (Fault(status=500, app_id=None), {"whole"}),
        (Fault(status=500, app_id=IOS.app_id), {"ios"}),
        (Fault(status=500, api_key=OTHER_KEY), {"other"}),
        (Fault(status=500), {"dau", "whole", "ios", "android", "other"}),
    ],
)
def test_faults_match_by_kpi_app_and_key(
    sim: BrazeSimulator, fault: Fault, faulted: set[str]
) -> None:
    sim.inject(fault)
    calls: dict[str, Callable[[], requests.Response]] = {
        "dau": lambda: fetch(sim, "dau", {"length": 1, "app_id": ANDROID.app_id}),
        "whole": lambda: fetch(sim, "mau", {"length": 1}),
        "ios": lambda: fetch(sim, "mau", {"length": 1, "app_id": IOS.app_id}),
        "android": lambda: fetch(sim, "mau", {"length": 1, "app_id": ANDROID.app_id}),
        "other": lambda: fetch(
            sim, "mau", {"length": 1, "app_id": OTHER_APP.app_id}, key=OTHER_KEY
        ),
    }

    statuses = {name: call().status_code for name, call in calls.items()}

    assert {name for name, status in statuses.items() if status == 500} == faulted
    assert {name for name, status in statuses.items() if status == 200} == set(calls) - faulted


def test_the_first_matching_fault_wins_until_cleared(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=500, kpi="mau"))
    sim.inject(Fault(status=503))

    assert fetch(sim, "mau").status_code == 500
    assert fetch(sim, "dau").status_code == 503
    sim.clear_faults()
    assert fetch(sim, "mau").status_code == 200


# --- recording, lifecycle, command line ------------------------------------------------


def test_every_request_is_recorded(sim: BrazeSimulator, clock: FakeClock) -> None:
    fetch(sim, params={"length": "3", "app_id": IOS.app_id})
    fetch(sim, key=None)
    fetch(sim, key="wrong")
    clock.now += 5
    fetch(sim, path="/nowhere")

    recorded = sim.requests
    assert [(r.path, r.api_key, r.status) for r in recorded] == [
        ("/kpi/mau/data_series", KEY, 200),
        ("/kpi/mau/data_series", None, 401),
        ("/kpi/mau/data_series", "wrong", 401),
        ("/nowhere", KEY, 404),
    ]
    assert recorded[0].params == {"length": "3", "app_id": IOS.app_id}
    assert [r.time for r in recorded] == [NOW.timestamp()] * 3 + [NOW.timestamp() + 5]
    sim.clear_requests()
    assert sim.requests == []


def test_stop_returns_promptly_while_a_slow_answer_is_in_flight() -> None:
    sim = BrazeSimulator([WORKSPACE]).start()
    sim.inject(Fault(delay=30))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(fetch(sim))
        except requests.ConnectionError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: sim.requests)
    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 1
    caller.join(timeout=5)
    assert isinstance(outcome[0], requests.ConnectionError)
    sim.stop()  # idempotent


def test_keep_alive_connections_are_reused_and_do_not_block_stop() -> None:
    sim = BrazeSimulator([WORKSPACE]).start()
    host, port = sim.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {KEY}"}
    statuses = []
    sockets = []
    for _ in range(2):
        connection.request("GET", "/kpi/mau/data_series?length=2", headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.append(connection.sock)
    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 1
    assert statuses == [200, 200]
    assert sockets[0] is sockets[1] is not None
    connection.close()


def test_url_needs_a_started_simulator_and_brackets_ipv6() -> None:
    sim = BrazeSimulator([WORKSPACE], host="::1")
    with pytest.raises(RuntimeError):
        _ = sim.url
    try:
        sim.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert sim.url.startswith("http://[::1]:")
        assert fetch(sim).status_code == 200
    finally:
        sim.stop()


def test_demo_workspaces() -> None:
    production, staging = DEMO_WORKSPACES
    assert (production.api_key, staging.api_key) == ("demo-production-key", "demo-staging-key")
    assert [app.base_mau for app in production.apps] == [1_200_000, 950_000, 400_000]
    assert [app.name for app in staging.apps] == ["ios"]


def test_main_serves_the_demo_workspaces_until_interrupted() -> None:
    app_id = DEMO_WORKSPACES[0].apps[0].app_id
    with subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        try:
            url = process.stdout.readline().split()[-1]
            response = requests.get(
                f"{url}/kpi/mau/data_series",
                params={"length": "1", "ending_at": ENDING_AT, "app_id": app_id},
                headers={"Authorization": "Bearer demo-production-key"},
                timeout=5,
            )
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0
            printed = process.stdout.read()
        finally:
            process.kill()  # a no-op once it has exited

    # another process, same values: the noise does not depend on Python's hash seed
    expected = BrazeSimulator(DEMO_WORKSPACES).expected_value(
        "demo-production-key", "mau", app_id, datetime.date(2026, 11, 19)
    )
    assert response.json()["data"] == [{"time": "2026-11-19", "mau": expected}]
    assert "demo-staging-key" in printed


def test_main_refuses_a_bad_listen_address() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--listen", "nowhere"])
    assert exit_info.value.code == 2
