"""Faults: what to answer instead of (or on top of) the normal answer, and which requests."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.simulator.replies import Reply, error_reply, json_reply

ANY = "*"


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or on top of) the normal answer, for requests that match.

    Precedence: `body`, then `data`, then `status`, then `message` alone; with none of them
    the normal answer is sent (after `delay`, with `headers`). Faults apply only to
    authenticated requests that the rate limit let through.
    """

    status: int | None = None  # this status, with {"message": message or a Braze-like default}
    message: str | None = None  # the JSON "message" (alone: a 200 without data, e.g. "queued")
    body: bytes | None = None  # raw body sent as is (status or 200)
    data: list[dict[str, object]] | None = None  # 200 {"message": "success", "data": <this>}
    delay: float = 0.0  # seconds to wait before answering
    drop_connection: bool = False  # close the socket without any answer
    headers: dict[str, str] | None = None  # extra or overriding headers ("" sends it empty)
    times: int | None = None  # apply to the next N matching requests; None = until cleared
    kpi: str = ANY  # a kind: mau, dau, new_users, uninstalls, sessions or sessions_hourly
    app_id: str | None = ANY  # None = only whole-workspace requests (no app_id)
    api_key: str = ANY

    def matches(self, kind: str | None, app_id: str | None, api_key: str) -> bool:
        """Whether a request for `kind` (None: an unknown path or unit) is affected."""
        return (
            self.kpi in (ANY, kind)
            and self.app_id in (ANY, app_id)
            and self.api_key in (ANY, api_key)
        )

    def reply(self) -> Reply | None:
        """The answer in place of the normal one, or None to keep the normal one."""
        if self.body is not None:
            return Reply(self.status or 200, self.body, {"Content-Type": "application/json"})
        if self.data is not None:
            payload = {"message": self.message or "success", "data": self.data}
            return json_reply(self.status or 200, payload)
        if self.status is not None:
            return error_reply(self.status, self.message)
        if self.message is not None:
            return json_reply(200, {"message": self.message})
        return None


@dataclass
class _Active:
    fault: Fault
    remaining: int | None


class FaultQueue:
    """Injected faults, first injected first matched. Not thread-safe: the caller locks."""

    def __init__(self) -> None:
        self._active: list[_Active] = []

    def add(self, fault: Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("Fault.times must be at least 1 (or None: until cleared)")
        self._active.append(_Active(fault, fault.times))

    def clear(self) -> None:
        self._active.clear()

    def take(self, kind: str | None, app_id: str | None, api_key: str) -> Fault | None:
        """The first fault matching a request, counted as used once."""
        for active in self._active:
            if active.fault.matches(kind, app_id, api_key):
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining <= 0:
                        self._active.remove(active)
                return active.fault
        return None
