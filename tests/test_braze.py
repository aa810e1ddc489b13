import gzip
import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
import responses
from prometheus_client import CollectorRegistry, generate_latest
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
from exporter.config import read_api_key, validate_config
from exporter.kpis import MAU
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.poller import Poller
from exporter.simulator import BrazeSimulator, Fault
from exporter.transport import MAX_BODY_BYTES, _WatchedHTTPSConnectionPool
from exporter.values import RateLimitInfo
from exporter.wiring import build_exporter
from tests.conftest import KEY_ENV, PROD, PROD_KEY, FakeClock, config_data, day_point, wait_until
from tests.hostile import (
    Behaviour,
    HostileServer,
    Peer,
    drips,
    echoes_authorization,
    endless_chunks,
    json_response,
    response,
    sends,
)

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


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
    *,
    key: str = PROD_KEY,
    timeout: float = 2,
    clock: FakeClock | None = None,
    retry: RetryPolicy = FAST_RETRY,
) -> BrazeClient:
    seen = seen or Attempts()
    return BrazeClient(
        url,
        SecretStr(key),
        timeout=timeout,
        retry=retry,
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
    clock = FakeClock()
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
    clock = FakeClock(1_800_000_000.0)  # 2027-01-15T08:00:00Z, a clock hour
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


# A hostile or broken Braze: each of these makes one poll of one series fail, with a reason,
# within the deadline, without the memory; the same client then reads a normal answer.

ONE_ATTEMPT = RetryPolicy(attempts=1)
DEADLINE = 0.5
MARGIN = 0.3  # how long a request may outlive its deadline: the watchdog's reaction time
PAYLOAD = {"message": "success", "data": [{"time": "2026-11-27", "mau": 7}]}
NORMAL = json_response(200, PAYLOAD)
NORMAL_POINT = day_point(date(2026, 11, 27), 7)  # complete by FakeClock()'s time
STATUS_LINE_END = NORMAL.index(b"\r\n") + 2
HEAD_END = NORMAL.index(b"\r\n\r\n") + 4


def failing_poll(
    server: HostileServer,
    timeout: float = DEADLINE,
    retry: RetryPolicy = ONE_ATTEMPT,
    recovers: bool = True,
) -> tuple[BrazeError, float, list[str]]:
    """A poll of the hostile server that must fail: its error, its seconds, the attempts' codes.
    Then (`recovers`) the same client polls again and must read the server's next answer,
    NORMAL: nothing stays broken."""
    seen = Attempts()
    client = client_for(server.url, seen, timeout=timeout, clock=FakeClock(), retry=retry)
    try:
        started = time.monotonic()
        with pytest.raises(BrazeError) as caught:
            client.newest_point(MAU, 3)
        seconds = time.monotonic() - started
        codes = list(seen.codes)
        if recovers:
            assert client.newest_point(MAU, 3) == NORMAL_POINT
    finally:
        client.close()
    return caught.value, seconds, codes


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (it makes the hostile server's certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=hostile"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls(tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The hostile server's TLS context; the client trusts its certificate."""
    cert, key = tls_files
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_a_compressed_answer_is_read(
    sim: BrazeSimulator, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    sim.inject(
        Fault(body=compress(json.dumps(PAYLOAD).encode()), headers={"Content-Encoding": encoding})
    )
    assert client_for(sim.url, clock=FakeClock()).newest_point(MAU, 3) == NORMAL_POINT


def test_gzip_is_asked_for() -> None:
    with HostileServer(sends(NORMAL)) as server:
        client = client_for(server.url, clock=FakeClock())
        assert client.newest_point(MAU, 3) == NORMAL_POINT
        client.close()
    assert server.requests[0]["accept-encoding"] == "gzip, deflate"


GZIP_START = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # a gzip header
EMPTY_BLOCK = b"\x00\x00\x00\xff\xff"  # a deflate block of no bytes, as a sync flush writes


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(endless_chunks(b"x" * 65536), id="plain"),
        pytest.param(  # nothing to decompress: only the cap on bytes received stops it
            endless_chunks(EMPTY_BLOCK * 13_000, GZIP_START, {"Content-Encoding": "gzip"}),
            id="gzip-of-nothing",
        ),
    ],
)
def test_an_endless_body_stops_at_the_size_cap(behaviour: Behaviour) -> None:
    with HostileServer(behaviour, sends(NORMAL)) as server:
        error, seconds, codes = failing_poll(server, timeout=5, retry=FAST_RETRY)
    assert (error.code, error.message) == ("body_too_large", "the answer is over 4 MiB")
    assert codes == ["body_too_large"]  # not retried
    assert seconds < 2  # the cap, not the deadline, ended it


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzipped into 64 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(2**20)
    return b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()


def test_a_gzip_bomb_stops_at_the_cap_without_the_memory(gzip_bomb: bytes) -> None:
    bomb = response(
        200, gzip_bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )
    with HostileServer(sends(bomb), sends(NORMAL)) as server:
        tracemalloc.start()
        try:
            error, seconds, codes = failing_poll(server, timeout=5, retry=FAST_RETRY)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (error.code, error.message) == (
        "body_too_large",
        "the answer is over 4 MiB once decompressed",
    )
    assert codes == ["body_too_large"]
    assert peak < 4 * MAX_BODY_BYTES  # never the 64 MiB
    assert seconds < 2


def test_a_body_announced_over_the_cap_is_not_waited_for() -> None:
    def announces(peer: Peer) -> None:
        peer.send(response(200, headers={"Content-Length": str(MAX_BODY_BYTES + 1)}))
        peer.stopping.wait()  # and sends nothing

    with HostileServer(announces, sends(NORMAL)) as server:
        error, seconds, _ = failing_poll(server, timeout=5)
    assert error.code == "body_too_large"
    assert error.message == f"the answer is over 4 MiB (Content-Length: {MAX_BODY_BYTES + 1})"
    assert seconds < 2


def test_corrupt_gzip_fails_the_answer() -> None:
    with HostileServer(
        sends(response(200, b"not gzip", {"Content-Encoding": "gzip"})), sends(NORMAL)
    ) as server:
        error, _, codes = failing_poll(server, retry=FAST_RETRY)
    assert (error.code, error.message) == ("200", "the answer's gzip or deflate data is corrupt")
    assert codes == ["200"]


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    "start",
    [
        pytest.param(0, id="status-line"),
        pytest.param(STATUS_LINE_END, id="headers"),
        pytest.param(HEAD_END, id="body"),
    ],
)
def test_a_drip_ends_at_the_deadline(
    request: pytest.FixtureRequest, scheme: str, start: int
) -> None:
    # A byte every 50 ms: no read ever waits long, so only a deadline for the whole request
    # ends it before the seconds the whole answer takes.
    tls = request.getfixturevalue("tls") if scheme == "https" else None
    with HostileServer(drips(NORMAL, start, every=0.05), sends(NORMAL), tls=tls) as server:
        error, seconds, codes = failing_poll(server)
    assert (error.code, error.message) == ("timeout", "no complete answer within 0.5s")
    assert codes == ["timeout"]
    assert DEADLINE <= seconds < DEADLINE + MARGIN


def test_a_dripped_tls_handshake_ends_at_the_deadline(tls: ssl.SSLContext) -> None:
    with HostileServer(sends(NORMAL), tls=tls, handshake_drip=0.05) as server:
        error, seconds, codes = failing_poll(server, recovers=False)
    assert (error.code, codes) == ("timeout", ["timeout"])
    assert DEADLINE <= seconds < DEADLINE + MARGIN


def test_endless_interim_answers_end_at_the_deadline() -> None:
    def continues(peer: Peer) -> None:
        while not peer.stopping.wait(0.01):
            peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")  # http.client skips these

    with HostileServer(continues, sends(NORMAL)) as server:
        error, seconds, _ = failing_poll(server)
    assert error.code == "timeout"
    assert DEADLINE <= seconds < DEADLINE + MARGIN


def test_a_request_over_its_deadline_is_retried_like_a_timeout() -> None:
    drip = drips(NORMAL, 0, every=0.05)
    with HostileServer(drip, drip, drip, sends(NORMAL)) as server:
        error, seconds, codes = failing_poll(server, timeout=0.3, retry=FAST_RETRY)
    assert error.code == "timeout"
    assert codes == ["timeout"] * 3
    assert seconds < 3 * (0.3 + MARGIN)


@pytest.mark.parametrize("status", [999, 600, 199, 103, 101])
def test_a_status_braze_cannot_send_fails_without_retry(status: int) -> None:
    bogus = response(status, json.dumps(PAYLOAD).encode())
    with HostileServer(sends(bogus), sends(NORMAL)) as server:
        error, _, codes = failing_poll(server, retry=FAST_RETRY)
        assert len(server.requests) == 2  # the bogus answer was not retried
    assert (error.code, error.message) == (
        str(status),
        f"HTTP status {status} is not valid for Braze",
    )
    assert codes == [str(status)]


QUOTED_KEY = 'prod-key-"quoted"-and-back\\slashed-0123'
LONG_KEY = "long-key-" + "0123456789abcdef" * 18 + "-end"  # longer than a message may be


@pytest.mark.parametrize("key", [QUOTED_KEY, LONG_KEY], ids=["quote-backslash", "300-chars"])
@pytest.mark.parametrize(
    ("echo", "masked"),
    [
        pytest.param(echoes_authorization(403, as_json=True), True, id="json-403"),
        pytest.param(echoes_authorization(200, as_json=True), True, id="json-200-message"),
        pytest.param(echoes_authorization(502, as_json=False), False, id="html-502"),
    ],
)
def test_an_echoed_key_stays_out_of_errors_and_logs(
    key: str, echo: Behaviour, masked: bool
) -> None:
    with HostileServer(echo) as server, pytest.raises(BrazeError) as caught:
        client_for(server.url, key=key).newest_point(MAU, 3)
    error = caught.value
    assert ("<redacted>" in error.message) == masked
    record = logging.makeLogRecord(
        {"name": "exporter.poller", "levelname": "WARNING", "msg": "poll failed"}
        | {"status": error.code, "error": error.message}
    )
    texts = [str(error)] + [f([key]).format(record) for f in (LogfmtFormatter, JsonFormatter)]
    logfmt_escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    for text in texts:
        for piece in (key, json.dumps(key)[1:-1], logfmt_escaped, key[:12], key[-12:]):
            assert piece not in text


def exporter_for(sim: BrazeSimulator) -> tuple[Poller, CollectorRegistry]:
    config = validate_config(config_data(sim.url), environ=KEY_ENV)
    exporter = build_exporter(config, {w.name: read_api_key(w, KEY_ENV) for w in config.workspaces})
    return exporter.poller, exporter.registry


IOS = {"workspace": "prod", "app": "ios"}


def test_a_count_beyond_float64_is_junk_and_metrics_still_render(sim: BrazeSimulator) -> None:
    day = sim.newest_day()
    huge = "1" + "0" * 400  # a JSON integer; 10**400 has no float64
    entries = (
        f'{{"time": "{day}", "mau": {huge}}}, {{"time": "{day - timedelta(days=1)}", "mau": 5}}'
    )
    sim.inject(Fault(body=f'{{"message": "success", "data": [{entries}]}}'.encode()))
    poller, registry = exporter_for(sim)
    try:
        poller.run_cycle()
    finally:
        poller.close()
    assert registry.get_sample_value("braze_monthly_active_users", IOS) == 5
    assert b"braze_monthly_active_users" in generate_latest(registry)  # what /metrics sends


def test_a_future_point_is_junk_and_never_pins_the_value(
    sim: BrazeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    in_a_year = (date.today() + timedelta(days=365)).isoformat()
    sim.inject(Fault(data=[{"time": in_a_year, "mau": 999}, {"time": "9999-12-31", "mau": 999}]))
    poller, registry = exporter_for(sim)
    try:
        with caplog.at_level(logging.WARNING):
            poller.run_cycle()
        errors = {vars(r).get("error") for r in caplog.records if r.getMessage() == "poll failed"}
        assert errors == {"no valid 'mau' data point in the answer"}  # junk, not partial
        assert registry.get_sample_value("braze_last_poll_success", IOS | {"kpi": "mau"}) == 0
        sim.clear_faults()
        poller.run_cycle()
    finally:
        poller.close()
    day = sim.newest_day()
    assert registry.get_sample_value("braze_monthly_active_users", IOS) == sim.expected_value(
        PROD_KEY, "mau", "app-ios", day
    )
    assert registry.get_sample_value("braze_last_poll_success", IOS | {"kpi": "mau"}) == 1


def test_no_watchdog_thread_or_socket_outlives_the_client(sim: BrazeSimulator) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count open files")
    open_files = len(os.listdir("/proc/self/fd"))
    client = client_for(sim.url)
    for _ in range(5):
        client.newest_point(MAU, 3)
    with HostileServer(drips(NORMAL, 0, every=0.05), sends(NORMAL)) as server:
        failing_poll(server)
    client.close()

    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "braze-deadline"]

    wait_until(lambda: not watchdogs(), "the deadline timers to end")
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= open_files, "every socket to close")


def test_the_connections_to_braze_share_one_tls_context_per_ca_bundle(
    tls_files: tuple[Path, Path],
) -> None:
    cert, _ = tls_files
    pool = _WatchedHTTPSConnectionPool(
        "127.0.0.1", 443, cert_reqs="CERT_REQUIRED", ca_certs=str(cert)
    )
    first, second = pool._new_conn(), pool._new_conn()
    assert first.ssl_context is second.ssl_context is not None
    assert first.ca_certs is None  # the bundle is not loaded again for each connection
    unverified = _WatchedHTTPSConnectionPool("127.0.0.1", 443, cert_reqs="CERT_NONE")
    assert unverified._new_conn().ssl_context is None  # urllib3's own, as before


def test_a_certificate_the_bundle_does_not_trust_is_refused(
    tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HostileServer(sends(NORMAL), tls=tls) as server:
        assert client_for(server.url, clock=FakeClock()).newest_point(MAU, 3) == NORMAL_POINT
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # the default bundle: a self-signed server
        client = client_for(server.url, clock=FakeClock(), retry=ONE_ATTEMPT)
        with pytest.raises(BrazeError) as refused:
            client.newest_point(MAU, 3)
        client.close()
    assert refused.value.code == "connection_error"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message
