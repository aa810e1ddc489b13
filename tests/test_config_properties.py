"""Property tests of config loading: whatever the file holds, the outcome is a valid `Config` or
a `ConfigError` (exit 2 with one line per problem), quickly, and never shows an API key.

Documents come in three kinds: structured ones close to real configs with values, keys and types
mutated; the example config.yaml with random edits; and raw text, of YAML's own tokens or of any
characters. The runs are derandomized (the same examples every time), 300 examples per test.
"""

from __future__ import annotations

import os
import re
import string
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.config import INSTANCE_URLS, Config, ConfigError, load_config, read_api_key
from exporter.config_yaml import DocumentError, load_yaml
from exporter.kpis import SUPPORTED_KPIS

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (REPO_ROOT / "config.yaml").read_text()
MARKER = "Qj7W"  # in every API key below; no message may hold it
GOOD_KEY = f"{MARKER}-0000-4000-8000-000000000001"
ENVIRON = {
    "GOOD": GOOD_KEY,
    "BRAZE_API_KEY": GOOD_KEY,
    "SHORT": MARKER,
    "TWO_LINES": f"{MARKER}-first-line-123\nsecond-line-{MARKER}",
    "SPACE": f"{MARKER} with a space 0123456",
    "UNICODE": f"ключ-{MARKER}-0123456789abcdef",
    "EMPTY": "",
}
PER_EXAMPLE = 2.0  # seconds; a load takes milliseconds
SETTINGS = settings(
    max_examples=300,
    deadline=PER_EXAMPLE * 1000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config's folder, with key files of every kind next to it."""
    path = tmp_path_factory.mktemp("configs")
    (path / "good.key").write_text(f"{GOOD_KEY}\n")
    (path / "empty.key").write_text("")
    (path / "two-lines.key").write_text(ENVIRON["TWO_LINES"])
    (path / "short.key").write_text(MARKER)
    (path / "huge.key").write_text(GOOD_KEY * 200)
    (path / "dir.key").mkdir()
    os.mkfifo(path / "fifo.key")
    return path


KEY_FILES = ["good.key", "empty.key", "two-lines.key", "short.key", "huge.key", "dir.key"]
KEY_FILES += ["fifo.key", "absent.key", "/dev/zero", "", "~", "\0"]


ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.text(max_size=16),
    st.sampled_from(["", " ", "٣", "1e308", ".inf", "-5m", "99999999999d", "1h30m", "0"]),
)
ODD_VALUES = st.recursive(
    ODD_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=6,
)


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return mostly(good, ODD_VALUES)


def mostly(
    usual: st.SearchStrategy[Any], *others: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """The usual choice 7 times in 8, else one of the others.

    (`st.one_of` picks among its branches evenly, repeating one does not weight it.)"""
    unusual = st.one_of(*others)
    return st.sampled_from(range(8)).flatmap(lambda n: unusual if n == 7 else usual)


DURATIONS = mostly(
    st.sampled_from(["1s", "30s", "15m", "1h", "1d", 900, 1, 86400, 2.5]),
    st.sampled_from(["500ms", 0, 0.5, 86401, "-1m", "25h", 1e308]),
)
URLS = mostly(
    st.sampled_from(["https://rest.iad-03.braze.com", "http://127.0.0.1:8080/", "http://[::1]"]),
    st.sampled_from(
        [
            "http://localhost",
            "http://example.com",
            "http://a..b",
            "https://admin:secret@host",
            "https://ключ.рф/",
            "https://[::1]:99999",
            "https://x/?q",
        ]
    ),
)
NAMES = mostly(
    st.sampled_from(["production", "staging", "ios", "android", "Продакшн", "本番", "web app"]),
    st.sampled_from(["i\udcff", "a\nb", " x", "", "\t", "a\u2028b"]),
    st.text(min_size=1, max_size=12),
)


APP = st.fixed_dictionaries({"name": maybe(NAMES), "id": maybe(NAMES)})
INSTANCE = st.fixed_dictionaries(
    {"instance": maybe(st.sampled_from([*INSTANCE_URLS, "us-03", "US-99"]))}
)
URL = st.fixed_dictionaries({"url": maybe(URLS)}, optional={"insecure_http": maybe(st.booleans())})
ENV_NAMES = mostly(st.sampled_from(["GOOD", "BRAZE_API_KEY"]), st.sampled_from([*ENVIRON, "A=B"]))
KEY_ENV = st.fixed_dictionaries({"api_key_env": maybe(ENV_NAMES)})
KEY_FILE = st.fixed_dictionaries(
    {"api_key_file": maybe(mostly(st.just("good.key"), st.sampled_from(KEY_FILES)))}
)
WORKSPACE = st.tuples(
    st.fixed_dictionaries(
        {"name": maybe(NAMES)},
        optional={
            "apps": maybe(st.lists(APP, max_size=3)),
            "time_zone": maybe(st.sampled_from(["UTC", "Europe/Berlin", "Mars/Base"])),
            "whole_workspace": maybe(st.booleans()),
        },
    ),
    mostly(
        st.one_of(INSTANCE, URL), st.tuples(INSTANCE, URL).map(lambda t: t[0] | t[1]), st.just({})
    ),
    mostly(
        st.one_of(KEY_ENV, KEY_FILE),
        st.tuples(KEY_ENV, KEY_FILE).map(lambda t: t[0] | t[1]),
        st.just({}),
    ),
    mostly(st.just({}), st.dictionaries(st.text(max_size=8), ODD_VALUES, max_size=1)),
).map(lambda parts: parts[3] | parts[0] | parts[1] | parts[2])
POLL = st.fixed_dictionaries(
    {},
    optional={
        "interval": maybe(DURATIONS),
        "timeout": maybe(DURATIONS),
        "length": maybe(st.integers(-1, 102)),
        "concurrency": maybe(st.integers(-1, 100)),
        "kpis": maybe(st.lists(st.sampled_from([*SUPPORTED_KPIS, "wau"]), max_size=4)),
    },
)
STRUCTURED = st.fixed_dictionaries(
    {"workspaces": maybe(st.lists(WORKSPACE, max_size=3))}, optional={"poll": maybe(POLL)}
)


YAML_TOKENS = [
    *"[]{}:,-?&*!|>'\"#%@`\n\t ",
    "- ",
    ": ",
    "\n  ",
    "\n    ",
    "<<: ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!set ",
    "!!binary ",
    "!custom ",
    "---\n",
    "...\n",
    "~",
    "yes",
    "1",
    "0x1F",
    "1_000",
    "1:20",
    ".inf",
    "2026-02-30",
    "2026-01-01T00:00:00Z",
    '"\\udcff"',
    '"\\x00"',
    "poll",
    "workspaces",
    "name",
    "interval",
    "length",
    "api_key_env",
    "api_key_file",
    "url",
    "apps",
    "id",
]
RAW_TEXT = st.one_of(
    st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join),
    st.text(max_size=200),
    st.text(alphabet=string.printable, max_size=200),
)


@st.composite
def edited_example(draw: st.DrawFn) -> str:
    """config.yaml with a few spans replaced by random YAML tokens (or deleted)."""
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        insert = draw(st.lists(st.sampled_from(YAML_TOKENS), max_size=4).map("".join))
        text = text[:start] + insert + text[end:]
    return text


def check(folder: Path, text: str) -> Config | ConfigError:
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    started = time.monotonic()
    try:
        outcome: Config | ConfigError = load_config(path, ENVIRON)
    except ConfigError as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    assert elapsed < PER_EXAMPLE, f"loading took {elapsed:.2f}s"
    event("valid" if isinstance(outcome, Config) else "refused")
    if isinstance(outcome, ConfigError):
        assert outcome.problems
        assert all(problem and "\n" not in problem for problem in outcome.problems)
        assert MARKER not in str(outcome)
    else:
        for workspace in outcome.workspaces:
            key = read_api_key(workspace, ENVIRON).get_secret_value()
            assert re.fullmatch(r"[\x21-\x7e]{16,}", key)
        assert MARKER not in repr(outcome)
        assert 1 <= outcome.poll.interval <= 86400
        assert 0 < outcome.poll.timeout <= outcome.poll.interval
        assert 1 <= outcome.poll.concurrency <= 64
    return outcome


@pytest.mark.timeout(60)
@SETTINGS
@given(config=STRUCTURED, allow_unicode=st.booleans())
def test_structured_configs_load_or_fail_cleanly(
    folder: Path, config: dict[str, Any], allow_unicode: bool
) -> None:
    check(folder, yaml.safe_dump(config, allow_unicode=allow_unicode, sort_keys=False))


@pytest.mark.timeout(60)
@SETTINGS
@given(text=edited_example())
def test_edited_example_loads_or_fails_cleanly(folder: Path, text: str) -> None:
    check(folder, text)


@pytest.mark.timeout(60)
@SETTINGS
@given(text=RAW_TEXT)
def test_raw_text_loads_or_fails_cleanly(folder: Path, text: str) -> None:
    check(folder, text)


@pytest.mark.timeout(60)
@SETTINGS
@given(text=st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join))
def test_yaml_loading_agrees_with_pyyaml(text: str) -> None:
    """Where PyYAML reads a document with string keys and no key given twice, load_yaml reads
    the same data, merge keys included."""
    try:
        expected = yaml.safe_load(text)
    except Exception:  # PyYAML fails some documents with IndexError, KeyError…
        event("PyYAML fails")
        return
    try:
        found = load_yaml(text)
    except DocumentError:
        event("refused")
        return  # stricter: a non-string key, a key twice, a cycle
    event("compared")
    assert found == expected or _unequal_only_by_nan(found, expected)


def _unequal_only_by_nan(found: object, expected: object) -> bool:
    return repr(found) == repr(expected) and "nan" in repr(found)
