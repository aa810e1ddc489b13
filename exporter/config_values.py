"""The rules single config values follow: durations, names, URLs and API keys.

Each rule is a plain function that returns the value (or raises ValueError with the message
shown to the user, without the key path, which `exporter.config` adds). API keys are read here
too, from the environment or a file, so that one function checks them wherever they are read;
no message ever holds a key or a part of one.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from pydantic import AfterValidator, SecretStr

from exporter.config_yaml import FileProblem, read_regular_file, shorten

KEY_FILE_LIMIT = 4096  # bytes; a Braze REST API key is a 36-character UUID
KEY_MIN_LENGTH = 16

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")  # ASCII digits only
_PLAIN_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_KEY = re.compile(rf"[\x21-\x7e]{{{KEY_MIN_LENGTH},}}")  # visible ASCII, no spaces
_USER_INFO = re.compile(r"[^:/?#]*://[^/?#]*@")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
# Characters that would break a line of the logs or of the exposition format, or that are
# not valid UTF-8 (lone surrogates): control characters, line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus-style duration ("30s", "15m", "1h30m", "500ms") or a number.

    Digits are ASCII only; a leading "-" is kept so that the bounds can name the value."""
    shown = shorten(repr(value))
    invalid = f"invalid duration {shown}: use e.g. 30s, 15m, 1h or a number of seconds"
    if isinstance(value, bool):
        raise ValueError(invalid)
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int beyond a float's range
            return math.inf if value > 0 else -math.inf
    text = str(value).strip()
    sign, digits = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
    if _PLAIN_SECONDS.fullmatch(digits):
        return sign * float(digits)
    parts = _DURATION_PART.findall(digits)
    if not parts or "".join(n + u for n, u in parts) != digits:
        raise ValueError(invalid)
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def duration_within(low: float, high: float) -> AfterValidator:
    """Finite, greater than 0, and from `low` to `high` seconds."""

    def check(seconds: float) -> float:
        if not math.isfinite(seconds):
            raise ValueError(f"must be a finite duration, got {seconds:g}")
        if not seconds > 0:
            raise ValueError(f"must be greater than 0, got {seconds:g}")
        if seconds < low:
            raise ValueError(f"must be at least {_readable(low)}, got {seconds:g}s")
        if seconds > high:
            raise ValueError(f"must be at most {_readable(high)}, got {seconds:g}s")
        return seconds

    return AfterValidator(check)


def _readable(seconds: float) -> str:
    """1d, 1h, 90s: a whole number of the largest unit that fits."""
    unit = next(u for u in ("d", "h", "m", "s") if seconds % _DURATION_UNITS[u] == 0 or u == "s")
    return f"{seconds / _DURATION_UNITS[unit]:g}{unit}"


def printable(text: str) -> str:
    """Text that logs and the exposition format can carry; any script, but one line of it."""
    for position, char in enumerate(text, start=1):
        kind = unicodedata.category(char)
        if kind in _UNPRINTABLE:
            what = {"Cs": "a lone surrogate, which is not valid UTF-8"}.get(
                kind, "a control character or line break"
            )
            raise ValueError(
                f"must be printable text: character {position} is {what} (U+{ord(char):04X})"
            )
    return text


def check_url(url: str, insecure_http: bool) -> None:
    """Raise ValueError unless `url` is an http(s) URL the Braze client can use as its base.

    User info is checked first, so that no message repeats a password given in the URL."""
    if _USER_INFO.match(url):
        raise ValueError(
            "must not hold user info (user:password@): the API key comes from api_key_env "
            "or api_key_file"
        )
    if any(char.isspace() or unicodedata.category(char) in _UNPRINTABLE for char in url):
        raise ValueError(f"not an http(s) URL: {url!r} holds white space or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError: not a number, or not in 0..65535
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"must not have a query or fragment: {url!r}")
    host = parts.hostname or ""
    problem = _host_problem(host)
    if problem:
        raise ValueError(f"not a valid URL: {url!r} ({problem})")
    if port == 0:
        raise ValueError(f"not a valid URL: {url!r} (port 0)")
    if parts.scheme == "http" and not insecure_http and not _loopback(host):
        raise ValueError(
            f"plain http:// would send the API key unencrypted to {host}: use https://, or "
            "set insecure_http: true on this workspace"
        )


def _host_problem(host: str) -> str | None:
    if not host:
        return "no host"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if not all(labels):
        return f"host {host!r} has an empty label"
    try:
        ascii_labels = host.removesuffix(".").encode("idna").decode("ascii").split(".")
    except UnicodeError:
        return f"host {host!r} is not a valid host name"
    if not all(_HOST_LABEL.fullmatch(part) for part in ascii_labels) or ascii_labels[-1].isdigit():
        return f"host {host!r} is not a valid host name or IP address"
    if len(".".join(ascii_labels)) > 253:
        return "host name longer than 253 characters"
    return None


def _loopback(host: str) -> bool:
    if host.removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeyProblem(ValueError):
    """An API key that cannot be used; the message never holds the key or a part of it."""


def key_from_env(name: str, environ: Mapping[str, str]) -> SecretStr:
    """The API key in the environment variable `name`, checked; raise KeyProblem otherwise."""
    if not name or "=" in name or "\0" in name:
        raise KeyProblem(f"not a valid environment variable name: {name!r}")
    key = environ.get(name, "").strip()
    if not key:
        raise KeyProblem(f"environment variable {name} is not set or empty")
    return _checked_key(key, f"environment variable {name}")


def key_from_file(path: Path) -> SecretStr:
    """The API key in the file at `path`, checked; raise KeyProblem otherwise."""
    try:
        data = read_regular_file(path, KEY_FILE_LIMIT)
    except FileProblem as exc:
        raise KeyProblem(f"cannot read {path}: {exc}") from None
    key = data.decode("utf-8", errors="surrogateescape").strip()
    if not key:
        raise KeyProblem(f"{path} is empty")
    return _checked_key(key, str(path))


def _checked_key(key: str, where: str) -> SecretStr:
    """The key, once it is one line of visible ASCII of a plausible length.

    A key with a line break or a space in it would be sent, and logged, as something else;
    a short one is more likely a word typed in the wrong place than a key."""
    if _KEY.fullmatch(key):
        return SecretStr(key)
    if any(char in "\r\n" for char in key):
        reason = "it holds more than one line"
    elif any(char.isspace() for char in key):
        reason = "it holds white space"
    elif not all("\x21" <= char <= "\x7e" for char in key):
        reason = "it holds characters other than visible ASCII"
    else:
        reason = f"it is {len(key)} characters long, expected at least {KEY_MIN_LENGTH}"
    raise KeyProblem(
        f"{where} does not hold a valid API key: {reason} (Braze REST API keys are 36 "
        "characters of visible ASCII, on one line)"
    )


def one_line(problem: str) -> str:
    """The problem with any line break or control character escaped (`\\n`), as one line."""
    return "".join(
        ascii(char)[1:-1] if unicodedata.category(char) in _UNPRINTABLE else char
        for char in problem
    )
