"""Logging set-up: one line per event, logfmt or JSON, extra fields as key=value, secrets masked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")
REDACTED = "<redacted>"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret replaced by REDACTED, longest first: a secret that contains
    another is masked whole, not around it."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class _EventFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def mask_also(self, secrets: Iterable[str]) -> None:
        """Mask these secrets too (a reload's new keys); those already masked stay masked."""
        self._secrets = (*self._secrets, *(s for s in secrets if s))

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        # Masked before rendering, which escapes: a key holding `"` or `\` would reach the line
        # as `\"` or `\\` and no longer match. The line is checked again as a last resort.
        line = self.render({key: self._masked(value) for key, value in fields.items()})
        return self._mask(line)

    def _masked(self, value: object) -> object:
        """A field's value with each secret masked in its text; numbers and None stay as they
        are unless their text holds a secret, anything else becomes its text."""
        text = self._mask(str(value))
        if value is None or isinstance(value, (bool, int, float)):
            return value if text == str(value) else text
        return text

    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._secrets)

    def render(self, fields: dict[str, Any]) -> str:
        raise NotImplementedError


class LogfmtFormatter(_EventFormatter):
    def render(self, fields: dict[str, Any]) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class JsonFormatter(_EventFormatter):
    def render(self, fields: dict[str, Any]) -> str:
        return json.dumps(fields, default=str, ensure_ascii=False)


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def configure_logging(
    level: str, fmt: str, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Send every log line to stderr (or `stream`) in `fmt`, masking each secret."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter_class = JsonFormatter if fmt == "json" else LogfmtFormatter
    handler.setFormatter(formatter_class(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every job run at info; its warnings (a skipped run) still come through.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))


def mask_also(secrets: Iterable[str]) -> None:
    """Mask these secrets too in every line from now on, as well as those masked already."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _EventFormatter):
            handler.formatter.mask_also(secrets)
