"""An answer as the HTTP handler sends it, and the Braze-style JSON bodies."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

_DEFAULT_MESSAGES = {202: "queued", 401: "Invalid API key", 429: "Rate limit exceeded"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    delay: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection without answering


def json_reply(
    status: int, payload: Mapping[str, object], headers: Mapping[str, str] | None = None
) -> Reply:
    body = json.dumps(payload, default=str).encode()
    return with_headers(Reply(status, body, {"Content-Type": "application/json"}), headers or {})


def error_reply(
    status: int, message: str | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """{"message": ...}, as Braze answers errors; a Braze-like message by default."""
    return json_reply(status, {"message": message or default_message(status)}, headers)


def default_message(status: int) -> str:
    try:
        return _DEFAULT_MESSAGES.get(status) or HTTPStatus(status).phrase
    except ValueError:  # a status the stdlib does not name
        return "Error"


def with_headers(reply: Reply, *layers: Mapping[str, str]) -> Reply:
    """`reply` with more headers; a later one replaces an earlier one of any letter case."""
    merged = {name.lower(): (name, value) for name, value in reply.headers.items()}
    for layer in layers:
        merged.update({name.lower(): (name, value) for name, value in layer.items()})
    return dataclasses.replace(reply, headers=dict(merged.values()))
