import threading
import time
from datetime import date

import pytest
import requests
import responses
from pydantic import SecretStr

from exporter.braze import (
    BrazeClient,
    BrazeError,
    CancelledError,
    PausedError,
    RateLimitedError,
    RetryPolicy,
    TransportError,
    parse_rate_limit,
)
from exporter.kpis import MAU
from exporter.simulator import BrazeSimulator, Fault
from exporter.values import RateLimitInfo
from tests.conftest import PROD, PROD_KEY, day_point, wait_until

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Attempts:
    """Records what the client reports for each HTTP request."""

    def __init__(self) -> None:
        self.codes: list[str] = []
        self.rate_limits: list[RateLimitInfo] = []

    def attempt(self, kpi: str, code: str, seconds: float) -> None:
        assert kpi == "mau" and seconds >= 0
        self.codes.append(code)

    def rate_limit(self, info: RateLimitInfo) -> None:
        self.rate_limits.append(info)


def client_for(
    url: str,
    seen: Attempts | None = None,
    key: str = PROD_KEY,
    timeout: float = 2,
    clock: Clock | None = None,
) -> BrazeClient:
    seen = seen or Attempts()
    return BrazeClient(
        url,
        SecretStr(key),
        timeout=timeout,
        retry=FAST_RETRY,
        on_attempt=seen.attempt,
        on_rate_limit=seen.rate_limit,
        clock=clock or time.time,
    )


def test_newest_point_of_an_app_and_of_the_workspace(sim: BrazeSimulator) -> None:
    client = client_for(sim.url)
    day = sim.newest_day()
    assert client.newest_point(MAU, 3, "app-ios") == day_point(
        day, sim.expected_value(PROD_KEY, "mau", "app-ios", day)
    )
    assert client.newest_point(MAU, 3) == day_point(
        day, sim.expected_value(PROD_KEY, "mau", None, day)
    )
    sent = sim.requests
    assert [r.params for r in sent] == [{"length": "3", "app_id": "app-ios"}, {"length": "3"}]
    assert all(r.path == "/kpi/mau/data_series" and r.api_key == PROD_KEY for r in sent)


def test_datetime_times_are_accepted() -> None:
    with BrazeSimulator((PROD,), time_format="datetime") as sim:
        point = client_for(sim.url).newest_point(MAU, 5, "app-web")
        assert point.start.date() == sim.newest_day()


def test_unsorted_answer_through_the_client(sim: BrazeSimulator) -> None:
    sim.inject(
        Fault(
            data=[
                {"time": "2026-11-27", "mau": 7},
                {"time": "2026-11-25", "mau": 5},
                {"time": "2026-11-26", "mau": 6},
            ]
        )
    )
    assert client_for(sim.url).newest_point(MAU, 3) == day_point(date(2026, 11, 27), 7)


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (
            Fault(data=[{"time": "2026-11-27", "mau": -3}]),
            "200",
            "no valid 'mau' data point in the answer",
        ),
        (Fault(data=[]), "200", "no valid 'mau' data point in the answer"),
        (Fault(message="error"), "200", "message is 'error', not 'success'"),
        (Fault(body=b"<html>oops</html>"), "200", "the answer is not a JSON object"),
        (Fault(status=202, message="queued"), "202", "queued"),
        (Fault(status=401), "401", "Invalid API key"),
        (
            Fault(status=403, message="no permission kpi.mau.data_series"),
            "403",
            "no permission kpi.mau.data_series",
        ),
        (Fault(status=400, message="bad app_id"), "400", "bad app_id"),
        (Fault(status=404, body=b"not found"), "404", "HTTP 404 without a Braze message"),
    ],
)
def test_failures_are_not_retried(
    sim: BrazeSimulator, fault: Fault, code: str, message: str
) -> None:
    sim.inject(fault)
    seen = Attempts()
    with pytest.raises(BrazeError) as caught:
        client_for(sim.url, seen).newest_point(MAU, 3, "app-ios")
    assert (caught.value.code, caught.value.message) == (code, message)
    assert len(sim.requests) == 1
    assert seen.codes == [code]


def test_wrong_key_is_a_401_without_retry(sim: BrazeSimulator) -> None:
    seen = Attempts()
    with pytest.raises(BrazeError) as caught:
        client_for(sim.url, seen, key="not-a-key").newest_point(MAU, 3)
    assert caught.value.code == "401"
    assert seen.codes == ["401"]


def test_missing_permission_is_a_403(sim: BrazeSimulator) -> None:
    from exporter.simulator import SimWorkspace

    limited = SimWorkspace("limited", "limited-key", permissions=frozenset())
    with BrazeSimulator((limited,)) as other, pytest.raises(BrazeError) as caught:
        client_for(other.url, key="limited-key").newest_point(MAU, 3)
    assert caught.value.code == "403"


def test_5xx_is_retried_with_backoff_until_success(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=503, times=2))
    seen = Attempts()
    point = client_for(sim.url, seen).newest_point(MAU, 3, "app-ios")
    assert point.start.date() == sim.newest_day()
    assert seen.codes == ["503", "503", "200"]


def test_5xx_gives_up_after_the_bounded_attempts(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=502, body=b"<html>Bad Gateway</html>"))
    seen = Attempts()
    with pytest.raises(BrazeError) as caught:
        client_for(sim.url, seen).newest_point(MAU, 3)
    assert caught.value.code == "502"
    assert seen.codes == ["502", "502", "502"]


def test_timeouts_are_retried_then_reported(sim: BrazeSimulator) -> None:
    sim.inject(Fault(delay=2.0))
    seen = Attempts()
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        client_for(sim.url, seen, timeout=0.2).newest_point(MAU, 3)
    assert caught.value.code == "timeout"
    assert seen.codes == ["timeout"] * 3
    assert time.monotonic() - started < 1.5  # every request had the timeout


def test_dropped_connection_is_retried(sim: BrazeSimulator) -> None:
    sim.inject(Fault(drop_connection=True, times=1))
    seen = Attempts()
    client_for(sim.url, seen).newest_point(MAU, 3)
    assert seen.codes == ["connection_error", "200"]


def test_refused_connection_is_a_connection_error() -> None:
    with BrazeSimulator((PROD,)) as sim:
        url = sim.url  # the port is free again once the simulator stopped
    with pytest.raises(TransportError) as caught:
        client_for(url).newest_point(MAU, 3)
    assert caught.value.code == "connection_error"
    assert "refused" in caught.value.message.lower()


def test_429_pauses_every_request_until_the_reset(sim: BrazeSimulator) -> None:
    clock = Clock()
    reset = clock.now + 120
    sim.inject(
        Fault(
            status=429,
            times=1,
            headers={"X-RateLimit-Reset": str(int(reset)), "X-RateLimit-Remaining": "0"},
        )
    )
    seen = Attempts()
    client = client_for(sim.url, seen, clock=clock)
    with pytest.raises(RateLimitedError) as caught:
        client.newest_point(MAU, 3, "app-ios")
    assert caught.value.resume_at == reset
    assert seen.codes == ["429"]  # no retry of a 429
    with pytest.raises(PausedError):
        client.newest_point(MAU, 3, "app-web")  # another series of the same workspace
    assert len(sim.requests) == 1  # nothing sent while paused
    assert client.paused_until == reset
    clock.now = reset
    assert client.paused_until == 0
    client.newest_point(MAU, 3, "app-web")
    assert len(sim.requests) == 2


@pytest.mark.parametrize(
    ("headers", "expected_delay"),
    [
        ({"Retry-After": "30"}, 30),
        ({"Retry-After": "Thu, 15 Jan 2027 08:01:40 GMT", "X-RateLimit-Reset": ""}, 100),
        ({"X-RateLimit-Reset": "", "X-RateLimit-Remaining": ""}, 1_800_003_600 - 1_800_000_000),
        ({"X-RateLimit-Reset": str(1_800_000_000 - 50)}, 1),  # reset in the past: pause 1 s
        ({"X-RateLimit-Reset": str(1_800_000_000 + 86_400)}, 3600),  # capped at an hour
    ],
)
def test_429_resume_time(
    sim: BrazeSimulator, headers: dict[str, str], expected_delay: float
) -> None:
    clock = Clock(1_800_000_000.0)  # 2027-01-15T08:00:00Z, a clock hour
    sim.inject(Fault(status=429, headers=headers))
    with pytest.raises(RateLimitedError) as caught:
        client_for(sim.url, clock=clock).newest_point(MAU, 3)
    assert caught.value.resume_at == clock.now + expected_delay


def test_real_bucket_exhaustion(sim: BrazeSimulator) -> None:
    sim.set_rate_limit_remaining(PROD_KEY, 1)
    seen = Attempts()
    client = client_for(sim.url, seen)
    client.newest_point(MAU, 3)  # the last request of the window: remaining 0 pauses us
    assert seen.rate_limits[-1].remaining == 0
    assert client.paused_until == seen.rate_limits[-1].reset_at
    with pytest.raises(PausedError):
        client.newest_point(MAU, 3, "app-ios")
    assert len(sim.requests) == 1


def test_rate_limit_headers_are_reported(sim: BrazeSimulator) -> None:
    seen = Attempts()
    client_for(sim.url, seen).newest_point(MAU, 3)
    (info,) = seen.rate_limits
    assert info.limit == PROD.rate_limit
    assert info.remaining == PROD.rate_limit - 1
    assert info.reset_at is not None and info.reset_at % 3600 == 0


def test_lowercase_rate_limit_headers() -> None:
    with BrazeSimulator((PROD,), lowercase_headers=True) as sim:
        seen = Attempts()
        client_for(sim.url, seen).newest_point(MAU, 3)
    assert seen.rate_limits[0].remaining == PROD.rate_limit - 1


def test_parse_rate_limit_is_tolerant() -> None:
    headers = requests.structures.CaseInsensitiveDict(
        {
            "x-ratelimit-limit": "250000",
            "X-RATELIMIT-REMAINING": " 12 ",
            "X-RateLimit-Reset": "1800003600.0",
        }
    )
    assert parse_rate_limit(headers) == RateLimitInfo(250000, 12, 1800003600.0)
    garbled = {"X-RateLimit-Limit": "", "X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "-5"}
    assert parse_rate_limit(garbled) == RateLimitInfo(None, None, None)
    assert parse_rate_limit({}) == RateLimitInfo(None, None, None)


def test_empty_headers_from_the_simulator(sim: BrazeSimulator) -> None:
    sim.inject(
        Fault(
            headers={"X-RateLimit-Remaining": "", "X-RateLimit-Reset": "", "X-RateLimit-Limit": ""}
        )
    )
    seen = Attempts()
    client_for(sim.url, seen).newest_point(MAU, 3)
    assert seen.rate_limits == []  # nothing usable: nothing reported


def test_close_cancels_a_retry_wait(sim: BrazeSimulator) -> None:
    sim.inject(Fault(status=503))
    client = BrazeClient(
        sim.url,
        SecretStr(PROD_KEY),
        timeout=2,
        retry=RetryPolicy(attempts=3, base_delay=30, max_delay=30),
    )
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            client.newest_point(MAU, 3)
        except BrazeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=poll)
    worker.start()
    wait_until(lambda: sim.requests, "the first request")
    client.close()
    worker.join(timeout=2)
    assert not worker.is_alive()
    assert isinstance(errors[0], CancelledError)


def test_key_stays_out_of_reprs_and_errors(sim: BrazeSimulator) -> None:
    client = client_for(sim.url)
    assert PROD_KEY not in repr(client)
    sim.inject(Fault(status=500))
    with pytest.raises(BrazeError) as caught:
        client.newest_point(MAU, 3)
    assert PROD_KEY not in str(caught.value)


@responses.activate
def test_redirects_are_not_followed() -> None:
    # Following one would send the key to wherever Braze (or a proxy) points.
    responses.get(
        "https://rest.example/kpi/mau/data_series",
        status=302,
        headers={"Location": "https://elsewhere.example/"},
    )
    with pytest.raises(BrazeError) as caught:
        client_for("https://rest.example").newest_point(MAU, 3)
    assert caught.value.code == "302"
    assert len(responses.calls) == 1
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {PROD_KEY}"
    assert "braze-exporter/" in sent.headers["User-Agent"]


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_delay=1, max_delay=5)
    for retry_number, ceiling in enumerate([1, 2, 4, 5, 5]):
        delays = {policy.delay(retry_number) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
