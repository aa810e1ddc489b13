"""A small client for Braze's KPI data series endpoints. It knows nothing of Prometheus.

One `BrazeClient` per workspace: one `requests.Session`, one API key, one rate-limit bucket.
Every request has a total deadline (`timeout`) for connecting (all but the DNS lookup), the
TLS handshake, the status line, the headers and the whole body, and a body of at most
`MAX_BODY_BYTES`, as received and decompressed. Connection errors, timeouts and answers
500-599 are retried with exponential backoff and jitter a bounded number of times; a status
outside 200-599 is no answer Braze sends and fails at once. A 429 pauses the whole client
(the workspace's bucket is shared by all its series) until Braze's reset time; while paused,
the client refuses to send anything. The key is masked in every error message, before any of
its text is flattened or cut.

Why a small loop instead of urllib3's `Retry` on the adapter: every attempt must be seen
(each one costs rate limit and is counted in `braze_api_requests_total`, while `Retry`
hides intermediate attempts inside urllib3), waits between attempts must end at once when
the exporter stops (`Retry` sleeps uninterruptibly), and a 429 is not retried at all but
pauses every request of the workspace, which is state `Retry` cannot hold.

The deadline and the caps are the transport's (exporter/transport.py says why the deadline
is a watchdog that shuts the socket down).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

import requests
from pydantic import SecretStr
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from exporter import __version__
from exporter.kpis import Kpi
from exporter.logs import mask_secrets
from exporter.periods import complete_points
from exporter.transport import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    CorruptBody,
    Deadline,
    DeadlineAdapter,
    DeadlinePassed,
    read_body,
)
from exporter.values import KpiPoint, RateLimitInfo

MAX_PAUSE_SECONDS = 3600.0  # Braze's buckets reset on the clock hour: never wait longer
_MESSAGE_LIMIT = 200
_MAX_INT_DIGITS = 309  # any longer integer overflows a float64: it is no count anyway


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # requests per call at most, the first included
    base_delay: float = 0.5  # seconds before the first retry, doubled each time
    max_delay: float = 8.0

    def ceiling(self, retry_number: int) -> float:
        """The longest backoff before retry `retry_number` (0-based)."""
        return float(min(self.max_delay, self.base_delay * 2**retry_number))

    def delay(self, retry_number: int) -> float:
        """Backoff before retry `retry_number` (0-based), with jitter over its upper half."""
        ceiling = self.ceiling(retry_number)
        return random.uniform(ceiling / 2, ceiling)


class BrazeError(Exception):
    """A call that did not give a data point. `code` is the HTTP status or a failure kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransportError(BrazeError):
    """No HTTP answer in time: a timeout or a connection error (worth retrying)."""


class RateLimitedError(BrazeError):
    """Braze answered 429; the client is paused until `resume_at` (Unix time)."""

    def __init__(self, message: str, resume_at: float) -> None:
        super().__init__("429", message)
        self.resume_at = resume_at


class PausedError(BrazeError):
    """Nothing was sent: the workspace is rate limited until `resume_at`."""

    def __init__(self, resume_at: float) -> None:
        super().__init__("paused", "rate limited, waiting for Braze's reset")
        self.resume_at = resume_at


class CancelledError(BrazeError):
    """The client was closed while a call was waiting to retry."""

    def __init__(self) -> None:
        super().__init__("cancelled", "the exporter is shutting down")


AttemptObserver = Callable[[str, str, float], None]  # (kpi name, code, seconds)
RateLimitObserver = Callable[[RateLimitInfo], None]
PauseObserver = Callable[[float], None]  # Unix time until which the workspace sends nothing


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]  # any letter case
    body: bytes  # decompressed


class BrazeClient:
    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float,
        pool_size: int = 4,
        retry: RetryPolicy = RetryPolicy(),
        on_attempt: AttemptObserver = _ignore,
        on_rate_limit: RateLimitObserver = _ignore,
        on_pause: PauseObserver = _ignore,
        time_zone: tzinfo = timezone.utc,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._retired_keys: tuple[str, ...] = ()  # still masked: answers may quote them
        self._time_zone = time_zone
        self._on_pause = on_pause
        self._timeout = timeout
        self._retry = retry
        self._on_attempt = on_attempt
        self._on_rate_limit = on_rate_limit
        self._clock = clock
        self._closed = threading.Event()
        self._pause_lock = threading.Lock()
        self._paused_until = 0.0
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Authorization": f"Bearer {api_key.get_secret_value()}",
                "Accept": "application/json",
                # What requests asks for, spelt out: the codings read_body decodes within its caps
                # (requests would add br or zstd whenever those libraries happen to be installed).
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": f"braze-exporter/{__version__}",
            }
        )
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"BrazeClient(base_url={self.base_url!r})"

    @property
    def paused_until(self) -> float:
        """Unix time until which the client sends nothing (0 when not paused)."""
        with self._pause_lock:
            return self._paused_until if self._paused_until > self._clock() else 0.0

    def set_api_key(self, api_key: SecretStr) -> None:
        """Send `api_key` from the next request on (a reload's rotated key); the old one stays
        masked in messages, since answers to requests in flight may still quote it."""
        old = self._api_key.get_secret_value()
        if api_key.get_secret_value() == old:
            return
        self._retired_keys = (*self._retired_keys, old)
        self._api_key = api_key
        self._session.headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"

    def hold_until(self, until: float) -> None:
        """Send nothing before `until` (Unix time): the pause of a client this one replaces."""
        with self._pause_lock:
            self._paused_until = max(self._paused_until, until)

    def close(self) -> None:
        """Abort waits between retries and close the connections."""
        self._closed.set()
        self._session.close()

    def newest_point(self, kpi: Kpi, length: int, app_id: str | None = None) -> KpiPoint:
        """The newest complete point of a series (`length` points asked for, the newest
        period included); raise BrazeError when the answer has none."""
        points = self.complete_points(kpi, length, app_id)
        return points[-1]

    def complete_points(
        self,
        kpi: Kpi,
        length: int,
        app_id: str | None = None,
        ending_at: datetime | None = None,
    ) -> tuple[KpiPoint, ...]:
        """The complete points of one page of a series, oldest first: `length` points up to
        the period of `ending_at` (default: now). Raise BrazeError when the answer has none."""
        params: dict[str, str | int] = {"length": length, **kpi.query()}
        if app_id is not None:
            params["app_id"] = app_id
        if ending_at is not None:
            params["ending_at"] = ending_at.astimezone(timezone.utc).isoformat(timespec="seconds")
        answer = self._get_with_retries(kpi, params)
        data = self._success_data(answer)
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        complete = complete_points(data, kpi.value_key, kpi.unit, self._time_zone, now)
        if complete.points:
            return complete.points
        code = str(answer.status)
        if complete.partial:
            raise BrazeError(code, f"no complete {kpi.unit} in the answer, only the current one")
        raise BrazeError(code, f"no valid {kpi.value_key!r} data point in the answer")

    def _get_with_retries(self, kpi: Kpi, params: Mapping[str, str | int]) -> _Answer:
        for retry_number in range(self._retry.attempts):
            last_attempt = retry_number == self._retry.attempts - 1
            try:
                answer = self._get_once(kpi, params)
            except TransportError:
                if last_attempt:
                    raise
            else:
                if answer.status < 500 or last_attempt:
                    return answer
            if self._closed.wait(self._retry.delay(retry_number)):
                raise CancelledError()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get_once(self, kpi: Kpi, params: Mapping[str, str | int]) -> _Answer:
        if self._closed.is_set():
            raise CancelledError()
        paused_until = self.paused_until
        if paused_until:
            raise PausedError(paused_until)
        started = time.monotonic()
        try:
            answer = self._fetch(self.base_url + kpi.path, params)
        except BrazeError as exc:
            self._on_attempt(kpi.name, exc.code, time.monotonic() - started)
            raise
        self._on_attempt(kpi.name, str(answer.status), time.monotonic() - started)
        rate_limit = parse_rate_limit(answer.headers)
        if rate_limit != RateLimitInfo(None, None, None):
            self._on_rate_limit(rate_limit)
        if answer.status == 429:
            resume_at = self._pause(answer.headers, rate_limit)
            raise RateLimitedError(
                self._braze_message(answer.status, _json(answer.body)), resume_at
            )
        if rate_limit.remaining == 0 and rate_limit.reset_at is not None:
            self._pause(answer.headers, rate_limit)  # the next request would be a 429
        return answer

    def _fetch(self, url: str, params: Mapping[str, str | int]) -> _Answer:
        """One HTTP request and its whole body, within the deadline and the size caps."""
        timed_out = TransportError("timeout", f"no complete answer within {self._timeout:g}s")
        with Deadline(self._timeout) as deadline:
            try:
                response = self._session.get(
                    url, params=params, timeout=self._timeout, allow_redirects=False, stream=True
                )
                # Closing it puts the connection back in the pool only if the body was read whole.
                with contextlib.closing(response):
                    status = response.status_code
                    if not 200 <= status < 600:  # 1xx, or no HTTP status at all
                        raise BrazeError(
                            str(status), f"HTTP status {status} is not valid for Braze"
                        )
                    body = read_body(response, deadline)
            except DeadlinePassed:
                raise timed_out from None
            except BodyTooLarge as exc:
                raise BrazeError(
                    "body_too_large", f"the answer is over {MAX_BODY_BYTES / 2**20:g} MiB{exc}"
                ) from None
            except CorruptBody:
                raise BrazeError(
                    str(status), "the answer's gzip or deflate data is corrupt"
                ) from None
            except (requests.RequestException, Urllib3Error, OSError) as exc:
                if deadline.passed or isinstance(
                    exc, (requests.Timeout, Urllib3Timeout, TimeoutError)
                ):
                    raise timed_out from None
                raise TransportError("connection_error", self._clean(_failure_text(exc))) from None
        return _Answer(status, response.headers, body)

    def _success_data(self, answer: _Answer) -> object:
        """The `data` of a successful answer; raise BrazeError for any other answer."""
        code = str(answer.status)
        body = _json(answer.body)
        if answer.status != 200:
            raise BrazeError(code, self._braze_message(answer.status, body))
        if not isinstance(body, dict):
            raise BrazeError(code, "the answer is not a JSON object")
        message = body.get("message")
        if message != "success":
            shown = self._clean(_json_text(message, self._mask, quote=True))
            raise BrazeError(code, f"message is {shown}, not 'success'")
        return body.get("data")

    def _braze_message(self, status: int, body: object) -> str:
        if isinstance(body, dict) and body.get("message") is not None:
            return self._clean(_json_text(body["message"], self._mask))
        return f"HTTP {status} without a Braze message"

    def _clean(self, text: str) -> str:
        """Text fit for an error message: the key masked first, so that no piece of it can
        survive the cut, then on one line of at most _MESSAGE_LIMIT characters."""
        flat = " ".join(self._mask(text).split())
        return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 1] + "…"

    def _mask(self, text: str) -> str:
        return mask_secrets(text, (self._api_key.get_secret_value(), *self._retired_keys))

    def _pause(self, headers: Mapping[str, str], rate_limit: RateLimitInfo) -> float:
        now = self._clock()
        resume_at = _retry_after(headers.get("Retry-After"), now) or rate_limit.reset_at
        if resume_at is None:
            resume_at = (math.floor(now / 3600) + 1) * 3600  # Braze resets on the clock hour
        resume_at = min(max(resume_at, now + 1), now + MAX_PAUSE_SECONDS)
        with self._pause_lock:
            self._paused_until = max(self._paused_until, resume_at)
            paused_until = self._paused_until
        self._on_pause(paused_until)
        return paused_until


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read X-RateLimit-* tolerantly: any case (a requests header map), empty or garbled -> None."""
    return RateLimitInfo(
        limit=_int_header(headers.get("X-RateLimit-Limit")),
        remaining=_int_header(headers.get("X-RateLimit-Remaining")),
        reset_at=_float_header(headers.get("X-RateLimit-Reset")),
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_int=_json_int)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond recursion
        return None


def _json_int(text: str) -> int | float:
    # Python 3.10.7+ refuses to parse integers over 4300 digits and older ones take quadratic
    # time; a number longer than any float64 is no count anyway.
    return int(text) if len(text) <= _MAX_INT_DIGITS else math.inf


def _json_text(value: object, mask: Callable[[str], str], quote: bool = False) -> str:
    """A JSON value as text for an error message, the key masked before repr() escapes it.
    Arrays and objects are named, not shown (repr() fails on deep nesting)."""
    if isinstance(value, (list, dict)):
        return "a JSON array" if isinstance(value, list) else "a JSON object"
    if isinstance(value, str):
        value = mask(value)
        return repr(value) if quote else value
    return repr(value)


def _int_header(value: str | None) -> int | None:
    number = _float_header(value)
    return None if number is None else int(number)


def _float_header(value: str | None) -> float | None:
    try:
        number = float(value.strip()) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _retry_after(value: str | None, now: float) -> float | None:
    seconds = _float_header(value)
    if seconds is not None:
        return now + seconds
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
    return None


def _failure_text(exc: Exception) -> str:
    cause = exc.args[0] if exc.args else exc
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real cause
    text = str(cause)
    if "object at 0x" in text and ">: " in text:  # "<HTTPConnection object at 0x..>: reason"
        text = text.split(">: ", 1)[1]
    return text or type(exc).__name__
