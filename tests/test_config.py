import json
import math
import os
import time
from pathlib import Path

import pytest

from exporter import config_yaml
from exporter.config import (
    INSTANCE_URLS,
    ConfigError,
    WorkspaceConfig,
    load_config,
    parse_duration,
    read_api_key,
    validate_config,
)

KEY = "secret-key-0123456789"  # long enough: keys are at least 16 characters
ENV = {"BRAZE_KEY": KEY}
REPO_ROOT = Path(__file__).resolve().parent.parent


def workspace(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "prod",
        "instance": "US-03",
        "api_key_env": "BRAZE_KEY",
        "apps": [{"name": "ios", "id": "app-1"}],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def problems(data: object, environ: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(data, "test.yaml", environ)
    return list(caught.value.problems)


def test_minimal_config_gets_defaults() -> None:
    config = validate_config({"workspaces": [workspace()]}, environ=ENV)
    assert config.poll.interval == 900
    assert config.poll.timeout == 10
    assert config.poll.length == 3
    assert config.poll.concurrency == 4
    assert config.poll.kpis == ("mau",)
    ws = config.workspaces[0]
    assert ws.whole_workspace is True
    assert ws.base_url == "https://rest.iad-03.braze.com"


def test_example_config_at_repo_root_is_valid() -> None:
    config = load_config(REPO_ROOT / "config.yaml", {"BRAZE_API_KEY": KEY})
    assert [w.name for w in config.workspaces] == ["production"]
    assert [a.name for a in config.workspaces[0].apps] == ["ios", "android"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        (45, 45),
        ("2.5", 2.5),
        ("1d", 86400),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "15 m", "m", "1x", "", True])
def test_bad_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_instance_names_cover_the_reference_hosts() -> None:
    assert INSTANCE_URLS["US-01"] == "https://rest.iad-01.braze.com"
    assert INSTANCE_URLS["US-08"] == "https://rest.iad-08.braze.com"
    assert INSTANCE_URLS["EU-02"] == "https://rest.fra-02.braze.eu"
    assert INSTANCE_URLS["KR-01"] == "https://rest.kr-01.braze.com"
    config = validate_config({"workspaces": [workspace(instance="eu-01")]}, environ=ENV)
    assert config.workspaces[0].base_url == "https://rest.fra-01.braze.eu"


def test_url_instead_of_instance() -> None:
    config = validate_config(
        {"workspaces": [workspace(instance=None, url="https://rest.new-99.braze.com/")]},
        environ=ENV,
    )
    assert config.workspaces[0].base_url == "https://rest.new-99.braze.com"


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    found = problems(
        {
            "poll": {
                "interval": "-5m",
                "intervall": 3,
                "length": 0,
                "timeout": "soon",
                "concurrency": 0,
                "kpis": ["mau", "dau", "wau"],
            },
            "workspaces": [
                workspace(
                    instance="US-99",
                    api_key_env="MISSING_VAR",
                    apps=[{"name": "ios"}, {"name": "web", "id": "x", "extra": 1}],
                ),
                workspace(
                    name="other",
                    instance=None,
                    url="ftp://nope",
                    api_key_env=None,
                    api_key_file="/nonexistent/key",
                ),
            ],
        }
    )
    assert found == [
        "poll.interval: must be greater than 0, got -300",
        "poll.timeout: invalid duration 'soon': use e.g. 30s, 15m, 1h or a number of seconds",
        "poll.length: Input should be greater than or equal to 1",
        "poll.concurrency: Input should be greater than or equal to 1",
        "poll.kpis: unsupported KPI 'wau'; supported: mau, dau, new_users, uninstalls, "
        "sessions, sessions_hourly",
        "poll.intervall: unknown key (did you mean 'interval'?)",
        "workspaces[0].instance: unknown instance 'US-99'; known: "
        + ", ".join(INSTANCE_URLS)
        + " (or give the REST endpoint as url)",
        "workspaces[0].api_key_env: environment variable MISSING_VAR is not set or empty",
        "workspaces[0].apps[0].id: required key is missing",
        "workspaces[0].apps[1].extra: unknown key",
        "workspaces[1].url: not an http(s) URL: 'ftp://nope'",
        "workspaces[1].api_key_file: cannot read /nonexistent/key: No such file or directory",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"url": "https://x.example"}, "workspaces[0]: set exactly one of instance or url"),
        ({"instance": None}, "workspaces[0]: set exactly one of instance or url"),
        ({"api_key_env": None}, "workspaces[0]: set exactly one of api_key_env or api_key_file"),
        (
            {"whole_workspace": False, "apps": []},
            "workspaces[0]: nothing to poll: whole_workspace is false and no apps are listed",
        ),
        (
            {"apps": [{"name": "ios", "id": "a"}, {"name": "ios", "id": "b"}]},
            "workspaces[0].apps: duplicate app name 'ios' (entries 0 and 1)",
        ),
        (
            {"apps": [{"name": "ios", "id": "a"}, {"name": "web", "id": "a"}]},
            "workspaces[0].apps: duplicate app id 'a' (entries 0 and 1)",
        ),
        ({"name": " "}, "workspaces[0].name: must not be empty"),
        ({"name": 7}, "workspaces[0].name: Input should be a valid string"),
    ],
)
def test_workspace_rules(overrides: dict[str, object], expected: str) -> None:
    assert problems({"workspaces": [workspace(**overrides)]}) == [expected]


def test_either_or_problems_come_with_the_others() -> None:
    found = problems(
        {
            "workspaces": [
                workspace(
                    url="https://x.example",
                    api_key_env=None,
                    whole_workspace="maybe",
                    apps=[{"name": "ios"}],
                ),
            ]
        }
    )
    assert found == [
        "workspaces[0].whole_workspace: Input should be a valid boolean, unable to interpret input",
        "workspaces[0].apps[0].id: required key is missing",
        "workspaces[0]: set exactly one of instance or url",
        "workspaces[0]: set exactly one of api_key_env or api_key_file",
    ]
    found = problems(
        {"workspaces": [workspace(whole_workspace=False, apps=[], api_key_env="MISSING")]}
    )
    assert found == [
        "workspaces[0].api_key_env: environment variable MISSING is not set or empty",
        "workspaces[0]: nothing to poll: whole_workspace is false and no apps are listed",
    ]


def test_workspace_names_are_unique() -> None:
    assert problems({"workspaces": [workspace(), workspace()]}) == [
        "workspaces: duplicate workspace name 'prod' (entries 0 and 1)"
    ]


def test_top_level_problems() -> None:
    assert problems({}) == ["workspaces: required key is missing"]
    assert problems({"workspaces": []}) == ["workspaces: must list at least one entry"]
    assert problems(["a list"]) == ["(top level): must be a mapping of keys to values, not list"]
    assert problems({"poll": 5, "workspaces": [workspace()]}) == [
        "poll: must be a mapping of keys to values, not int"
    ]


def test_api_key_from_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("  file-key-0123456789\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "workspaces:\n"
        "  - {name: a, instance: US-01, api_key_env: BRAZE_KEY}\n"
        "  - {name: b, instance: US-02, api_key_file: key}\n"  # relative to the config file
    )
    config = load_config(config_file, ENV)
    a, b = config.workspaces
    assert read_api_key(a, ENV).get_secret_value() == KEY
    assert read_api_key(b, ENV).get_secret_value() == "file-key-0123456789"
    assert "file-key-0123456789" not in repr(config) and KEY not in repr(config)
    assert "file-key-0123456789" not in repr(read_api_key(b, ENV))


def test_empty_key_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    found = problems(
        {"workspaces": [workspace(api_key_env=None, api_key_file=str(tmp_path / "key"))]}
    )
    assert found == [f"workspaces[0].api_key_file: {tmp_path / 'key'} is empty"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "test.yaml: 1 problem:\n  the file is empty"),
        (
            "poll: {interval: 1m}\npoll: {interval: 2m}\n",
            "poll: key given twice (line 1, column 1 and line 2, column 1)",
        ),
        ("workspaces: [\n", "invalid YAML at line 2, column 1:"),
    ],
)
def test_yaml_problems(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "test.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert expected.replace("test.yaml", str(path)) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load_config(tmp_path / "absent.yaml", ENV)


def test_config_is_immutable() -> None:
    config = validate_config({"workspaces": [workspace()]}, environ=ENV)
    with pytest.raises(ValueError, match="frozen"):
        config.workspaces[0].name = "other"  # type: ignore[misc]


def test_every_kind_can_be_polled() -> None:
    kinds = ["mau", "dau", "new_users", "uninstalls", "sessions", "sessions_hourly"]
    config = validate_config({"poll": {"kpis": kinds}, "workspaces": [workspace()]}, environ=ENV)
    assert config.poll.kpis == tuple(kinds)


def test_length_1_leaves_no_complete_point_for_counting_kinds() -> None:
    config = {"poll": {"length": 1}, "workspaces": [workspace()]}
    assert validate_config(config, environ=ENV).poll.length == 1  # MAU's newest is yesterday
    assert problems(
        {**config, "poll": {"length": 1, "kpis": ["mau", "sessions_hourly", "dau"]}}
    ) == [
        "poll.length: must be at least 2 with sessions_hourly, dau: the newest point of those "
        "is the current day or hour, which is never exported"
    ]


def test_time_zone_defaults_to_utc_and_takes_iana_names() -> None:
    config = validate_config(
        {"workspaces": [workspace(), workspace(name="eu", time_zone="Europe/Berlin")]},
        environ=ENV,
    )
    assert [w.time_zone for w in config.workspaces] == ["UTC", "Europe/Berlin"]
    assert str(config.workspaces[1].zone) == "Europe/Berlin"


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("Europe/Berln", "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"),
        ("../../etc/passwd", "unknown time zone '../../etc/passwd'"),
        ("", "unknown time zone ''"),
        ("Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
    ],
)
def test_unknown_time_zone_names_the_key(zone: str, message: str) -> None:
    found = problems({"workspaces": [workspace(), workspace(name="eu", time_zone=zone)]})
    assert found == [
        f"workspaces[1].time_zone: {message}; use an IANA name such as UTC, Europe/Berlin or "
        "America/New_York"
    ]


def test_zones_work_without_system_zone_data(tmp_path: Path) -> None:
    """The slim image has no /usr/share/zoneinfo: the tzdata package must provide the zones."""
    import subprocess
    import sys

    check = (
        "import zoneinfo, sys; assert zoneinfo.TZPATH == (), zoneinfo.TZPATH; "
        "from exporter.config import validate_config; "
        "c = validate_config({'workspaces': [{'name': 'w', 'url': 'http://127.0.0.1', "
        "'api_key_env': 'K', 'time_zone': 'America/New_York'}]}, environ={'K': 'k' * 36}); "
        "print(c.workspaces[0].zone.utcoffset(__import__('datetime').datetime(2026, 7, 1)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        env={"PYTHONTZPATH": "", "PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "-1 day, 20:00:00"


# --- a bad config is exit 2 with a key path, and the config refuses what cannot be served ---


def load_problems(path: Path, text: str, environ: dict[str, str] = ENV) -> list[str]:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ)
    found = list(caught.value.problems)
    assert all("\n" not in problem for problem in found)
    return found


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("i\udcff", "character 2 is a lone surrogate, which is not valid UTF-8 (U+DCFF)"),
        ("a\nb", "character 2 is a control character or line break (U+000A)"),
        ("tab\there", "character 4 is a control character or line break (U+0009)"),
        ("nul\0", "character 4 is a control character or line break (U+0000)"),
        ("line\u2028sep", "character 5 is a control character or line break (U+2028)"),
        ("del\x7f", "character 4 is a control character or line break (U+007F)"),
    ],
)
def test_names_must_be_printable_text(tmp_path: Path, name: str, message: str) -> None:
    """Names become label values and log fields: a lone surrogate made every scrape a 500."""
    quoted = json.dumps(name)  # a JSON string is a double-quoted YAML scalar, escapes and all
    text = (
        f"workspaces:\n  - name: {quoted}\n    instance: US-01\n    api_key_env: BRAZE_KEY\n"
        f"    apps: [{{name: {quoted}, id: {quoted}}}]\n"
    )
    assert load_problems(tmp_path / "c.yaml", text) == [
        f"workspaces[0].name: must be printable text: {message}",
        f"workspaces[0].apps[0].name: must be printable text: {message}",
        f"workspaces[0].apps[0].id: must be printable text: {message}",
    ]


def test_names_in_any_script_are_fine() -> None:
    names = ["Продакшн", "本番環境", "مرحبا", "हिन्दी", "👩\u200d💻 team", "a\u00a0b", "Ζήτα"]
    config = validate_config(
        {"workspaces": [workspace(name=n, apps=[{"name": n, "id": n}]) for n in names]},
        environ=ENV,
    )
    assert [w.name for w in config.workspaces] == names


SECRET = "Zq9"  # in every bad key below: no message may repeat it


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (f"{SECRET}-first-line-0123\nsecond-line-{SECRET}", "it holds more than one line"),
        (f"{SECRET}-with a-space-0123456", "it holds white space"),
        (f"ключ-{SECRET}-0123456789abcdef", "it holds characters other than visible ASCII"),
        (f"{SECRET}-tab\there-0123456", "it holds white space"),
        (f"{SECRET}\x01-control-0123456", "it holds characters other than visible ASCII"),
        (f"{SECRET}-short", "it is 9 characters long, expected at least 16"),
        ("mau", "it is 3 characters long, expected at least 16"),
    ],
)
def test_a_key_is_one_line_of_visible_ascii(tmp_path: Path, key: str, reason: str) -> None:
    """A second line or a newline in the key was logged whole by every poll; `mau` is a word
    typed in the wrong place, not a key."""
    (tmp_path / "key").write_text(f"\n  {key}\n\n", encoding="utf-8")
    found = problems(
        {
            "workspaces": [
                workspace(api_key_env="BAD_KEY"),
                workspace(name="b", api_key_env=None, api_key_file=str(tmp_path / "key")),
            ]
        },
        {"BAD_KEY": f" {key}\n"},
    )
    suffix = f"{reason} (Braze REST API keys are 36 characters of visible ASCII, on one line)"
    assert found == [
        f"workspaces[0].api_key_env: environment variable BAD_KEY does not hold a valid API "
        f"key: {suffix}",
        f"workspaces[1].api_key_file: {tmp_path / 'key'} does not hold a valid API key: {suffix}",
    ]
    for part in [key, *key.split(), SECRET]:
        assert part not in " ".join(found)


def test_a_key_of_16_visible_ascii_characters_will_do(tmp_path: Path) -> None:
    key = "!~" + "x" * 14
    (tmp_path / "key").write_text(f"{key}\r\n")
    config = validate_config(
        {"workspaces": [workspace(api_key_env=None, api_key_file=str(tmp_path / "key"))]},
        environ={},
    )
    assert read_api_key(config.workspaces[0], {}).get_secret_value() == key


def test_key_file_is_read_once_at_validation(tmp_path: Path) -> None:
    """The key validation read is the one the exporter uses: the file is not read again."""
    (tmp_path / "key").write_text(KEY)
    config = validate_config(
        {"workspaces": [workspace(api_key_env=None, api_key_file=str(tmp_path / "key"))]},
        environ={},
    )
    (tmp_path / "key").unlink()
    assert read_api_key(config.workspaces[0], {}).get_secret_value() == KEY


def test_read_api_key_still_reads_a_workspace_built_without_validation(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("two\nlines-of-key-material")
    built = WorkspaceConfig.model_construct(name="w", api_key_file=tmp_path / "key")
    with pytest.raises(ConfigError, match="does not hold a valid API key: it holds more than"):
        read_api_key(built, {})
    from_env = WorkspaceConfig.model_construct(name="w", api_key_env="K")
    assert read_api_key(from_env, {"K": KEY}).get_secret_value() == KEY


def test_concurrency_is_bounded() -> None:
    """100,000,000 filled a connection pool up front and hung start-up."""
    config = {"poll": {"concurrency": 100_000_000}, "workspaces": [workspace()]}
    assert problems(config) == ["poll.concurrency: Input should be less than or equal to 64"]
    config = {"poll": {"concurrency": 64}, "workspaces": [workspace()]}
    assert validate_config(config, environ=ENV).poll.concurrency == 64


def key_file_config(path: Path, key_file: str) -> Path:
    path.write_text(f"workspaces:\n  - {{name: a, instance: US-01, api_key_file: '{key_file}'}}\n")
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def huge_file(tmp_path: Path) -> Path:
    path = tmp_path / "huge"
    with path.open("wb") as file:
        file.truncate(1024**3)  # sparse: 1 GB that takes no disk space
    return path


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("special", "reason"),
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a character device)"),
        ("huge_file", "larger than 1 MiB"),
        ("directory", "not a regular file (a directory)"),
    ],
)
def test_config_file_must_be_a_small_regular_file(
    request: pytest.FixtureRequest, tmp_path: Path, special: str, reason: str
) -> None:
    """A FIFO hung even --check-config; /dev/zero or a 1 GB file ate memory."""
    path = special_path(request, tmp_path, special)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert caught.value.problems == (f"cannot read the config file: {reason}",)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("special", "reason"),
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a character device)"),
        ("huge_file", "larger than 4 KiB"),
        ("directory", "not a regular file (a directory)"),
    ],
)
def test_key_file_must_be_a_small_regular_file(
    request: pytest.FixtureRequest, tmp_path: Path, special: str, reason: str
) -> None:
    path = special_path(request, tmp_path, special)
    config = key_file_config(tmp_path / "c.yaml", str(path))
    with pytest.raises(ConfigError) as caught:
        load_config(config, {})
    assert caught.value.problems == (f"workspaces[0].api_key_file: cannot read {path}: {reason}",)


def special_path(request: pytest.FixtureRequest, tmp_path: Path, special: str) -> Path:
    if special == "directory":
        return tmp_path
    if special.startswith("/"):
        return Path(special)
    path: Path = request.getfixturevalue(special)
    return path


def test_key_file_of_4_kib_is_read_but_one_byte_more_is_not(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY.ljust(4096))
    config = load_config(key_file_config(tmp_path / "c.yaml", "key"), {})
    assert read_api_key(config.workspaces[0], {}).get_secret_value() == KEY
    (tmp_path / "key").write_text(KEY.ljust(4097))
    with pytest.raises(ConfigError, match=r"cannot read .*key: larger than 4 KiB"):
        load_config(tmp_path / "c.yaml", {})


@pytest.mark.parametrize(
    ("poll", "found"),
    [
        ({"interval": math.inf}, "poll.interval: must be a finite duration, got inf"),
        ({"interval": math.nan}, "poll.interval: must be a finite duration, got nan"),
        ({"interval": 1e308}, "poll.interval: must be at most 1d, got 1e+308s"),
        ({"interval": "99999999999d"}, "poll.interval: must be at most 1d, got 8.64e+15s"),
        ({"interval": 10**400}, "poll.interval: must be a finite duration, got inf"),
        ({"interval": "25h"}, "poll.interval: must be at most 1d, got 90000s"),
        ({"interval": "500ms"}, "poll.interval: must be at least 1s, got 0.5s"),
        ({"timeout": 1e10}, "poll.timeout: must be at most 1d, got 1e+10s"),
        (
            {"timeout": "1e10"},
            "poll.timeout: invalid duration '1e10': use e.g. 30s, 15m, 1h or a number of seconds",
        ),
        ({"timeout": "0s"}, "poll.timeout: must be greater than 0, got 0"),
        (
            {"interval": "1m", "timeout": "61s"},
            "poll.timeout: must not be longer than poll.interval (60s), got 61s",
        ),
        (
            {"interval": 5},
            "poll.timeout: must not be longer than poll.interval (5s), got 10s",
        ),
    ],
)
def test_durations_are_bounded(poll: dict[str, object], found: str) -> None:
    """.inf, 1e308 and 99999999999d were accepted, then serving died."""
    assert problems({"poll": poll, "workspaces": [workspace()]}) == [found]


def test_duration_bounds_are_inclusive() -> None:
    for interval, timeout in [("1s", "1s"), ("1d", "1d"), (86400, "500ms"), ("24h", "0.001")]:
        config = {"poll": {"interval": interval, "timeout": timeout}, "workspaces": [workspace()]}
        validate_config(config, environ=ENV)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "? [a, b]\n: 1\n",
            ["(top level): mapping keys must be strings, found a list at line 1, column 3"],
        ),
        (
            "poll:\n  ? {a: 1}\n  : 1\n  5: x\n  yes: y\n  ~: z\n  2026-01-01: d\n",
            [
                "poll: mapping keys must be strings, found a mapping at line 2, column 5",
                "poll: mapping keys must be strings, found int '5' at line 4, column 3; quote "
                "it to make it a string",
                "poll: mapping keys must be strings, found bool 'yes' at line 5, column 3; "
                "quote it to make it a string",
                "poll: mapping keys must be strings, found null '~' at line 6, column 3; quote "
                "it to make it a string",
                "poll: mapping keys must be strings, found timestamp '2026-01-01' at line 7, "
                "column 3; quote it to make it a string",
            ],
        ),
        (
            "workspaces:\n  - name: a\n    apps: [{name: x, 1: y}]\n",
            [
                "workspaces[0].apps[0]: mapping keys must be strings, found int '1' at line 3, "
                "column 22; quote it to make it a string"
            ],
        ),
        (
            "poll: {length: " + "1" * 5001 + "}\n",
            ["poll.length: an integer with too many digits (line 1, column 16)"],
        ),
        (
            "poll: {when: 2026-02-30}\n",
            ["poll.when: not a valid timestamp: '2026-02-30' (line 1, column 14)"],
        ),
        (
            "poll: !!set {a, b}\n",
            ["poll: unsupported tag !!set (line 1, column 7)"],
        ),
        (
            "poll: {a: !custom x}\n",
            ["poll.a: unsupported tag !custom (line 1, column 11)"],
        ),
        (
            "a: &a [*a]\n",
            ["a[0]: an alias refers to a collection that contains it (line 1, column 4)"],
        ),
        (
            "poll: 1\n'poll': 2\n",
            ["poll: key given twice (line 1, column 1 and line 2, column 1)"],
        ),
        (
            "a: \x01\n",
            [
                "invalid YAML at line 1, column 4: unacceptable character #x0001: special "
                "characters are not allowed"
            ],
        ),
        ("[" * 10_000, ["invalid YAML at line 1, column 51: nested more than 50 levels deep"]),
        (
            "x: " + "[" * 50 + "]" * 50,
            ["invalid YAML at line 1, column 53: nested more than 50 levels deep"],
        ),
    ],
)
def test_yaml_structure_problems_name_their_path(
    tmp_path: Path, text: str, found: list[str]
) -> None:
    """Keys that were lists or maps, deep nesting and a 5001-digit integer were tracebacks."""
    assert load_problems(tmp_path / "c.yaml", text) == found


def test_nesting_of_50_levels_is_fine(tmp_path: Path) -> None:
    text = "x: " + "[" * 49 + "]" * 49 + "\n"
    assert load_problems(tmp_path / "c.yaml", text) == [
        "workspaces: required key is missing",
        "x: unknown key",
    ]


def test_keys_in_messages_stay_on_one_line(tmp_path: Path) -> None:
    text = 'poll: {"a\\nb": 1, "\\u2028": 2}\nworkspaces: [{name: w, url: "http://x\\ny"}]\n'
    assert load_problems(tmp_path / "c.yaml", text) == [
        "poll['a\\nb']: unknown key",
        "poll['\\u2028']: unknown key",
        "workspaces[0].url: not an http(s) URL: 'http://x\\ny' holds white space or control "
        "characters",
        "workspaces[0]: set exactly one of api_key_env or api_key_file",
    ]


def test_aliases_that_expand_too_far_are_refused(tmp_path: Path) -> None:
    """A billion laughs: cheap to parse, but the model's validation walks the expanded tree."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    merges = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"]
    merges += [
        f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 10)}], z{n}: 1}}" for n in range(1, 9)
    ]
    for text in ("\n".join(lines), "\n".join(merges)):
        started = time.monotonic()
        assert load_problems(tmp_path / "c.yaml", text) == [
            "the document holds more than 100000 values with its aliases expanded"
        ]
        assert time.monotonic() - started < 5


def test_a_dense_document_is_stopped_while_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node costs some hundreds of bytes: 1 MiB of `[1,1,1,…]` would take 400 MB."""
    monkeypatch.setattr(config_yaml, "MAX_VALUES", 100)  # the real 100,000 takes seconds
    text = "x: [" + ",".join("1" * 200) + "]"
    assert load_problems(tmp_path / "c.yaml", text) == [
        "invalid YAML at line 1, column 199: more than 100 values"
    ]


def test_a_key_file_that_is_not_a_path_comes_with_the_other_problems(tmp_path: Path) -> None:
    """`api_key_file: 5` with a missing url was a KeyError traceback."""
    text = "workspaces: [{name: a, api_key_file: 5}]\n"
    assert load_problems(tmp_path / "c.yaml", text) == [
        "workspaces[0].api_key_file: must be a path, not int",
        "workspaces[0]: set exactly one of instance or url",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a..b", "not a valid URL: 'http://a..b' (host 'a..b' has an empty label)"),
        ("https://.x", "not a valid URL: 'https://.x' (host '.x' has an empty label)"),
        (
            "https://a_b-.example",
            "not a valid URL: 'https://a_b-.example' (host 'a_b-.example' "
            "is not a valid host name or IP address)",
        ),
        ("https://x:99999", "not a valid URL: 'https://x:99999' (Port out of range 0-65535)"),
        (
            "https://x:port",
            "not a valid URL: 'https://x:port' (Port could not be cast to integer value as 'port')",
        ),
        ("https://x:0", "not a valid URL: 'https://x:0' (port 0)"),
        ("https://[::1", "not a valid URL: 'https://[::1' (Invalid IPv6 URL)"),
        (
            "https://" + "a" * 64 + ".com",
            "not a valid URL: 'https://"
            + "a" * 64
            + ".com' (host '"
            + "a" * 64
            + ".com' is not a valid host name)",
        ),
        (
            "https://300.1.2.3",
            "not a valid URL: 'https://300.1.2.3' (host '300.1.2.3' is not a "
            "valid host name or IP address)",
        ),
        ("https://x/a?b=1", "must not have a query or fragment: 'https://x/a?b=1'"),
        ("https://x/#top", "must not have a query or fragment: 'https://x/#top'"),
        ("ftp://x", "not an http(s) URL: 'ftp://x'"),
        ("https:///path", "not an http(s) URL: 'https:///path'"),
        ("https://:443", "not a valid URL: 'https://:443' (no host)"),
    ],
)
def test_urls_must_parse_with_a_valid_host(url: str, message: str) -> None:
    """`http://a..b` was accepted, then every poll logged a traceback."""
    found = problems({"workspaces": [workspace(instance=None, url=url)]})
    assert found == [f"workspaces[0].url: {message}"]


@pytest.mark.parametrize(
    "url",
    [
        "https://rest.iad-03.braze.com/",
        "https://ключ.рф",
        "https://REST.Example.COM:8443/base/path",
        "https://example.com.",
        "https://[2001:db8::1]:443",
        "https://10.0.0.1",
        "https://braze_proxy.internal",
        "http://127.0.0.1:8080",
        "http://127.3.2.1",
        "http://[::1]:9000",
        "http://localhost:1",
    ],
)
def test_good_urls(url: str) -> None:
    config = validate_config({"workspaces": [workspace(instance=None, url=url)]}, environ=ENV)
    assert config.workspaces[0].base_url == url.rstrip("/")


def test_urls_with_user_info_are_refused_without_repeating_them() -> None:
    """The URL's credentials replaced the Bearer key on the wire."""
    for url in ["https://admin:s3cr3t@rest.example.com", "https://token@x", "http://a:b@[::1]"]:
        assert problems({"workspaces": [workspace(instance=None, url=url)]}) == [
            "workspaces[0].url: must not hold user info (user:password@): the API key comes from "
            "api_key_env or api_key_file"
        ]


def test_plain_http_beyond_loopback_needs_insecure_http() -> None:
    url = "http://braze-simulator.test.svc:8080"
    assert problems({"workspaces": [workspace(instance=None, url=url)]}) == [
        "workspaces[0].url: plain http:// would send the API key unencrypted to "
        "braze-simulator.test.svc: use https://, or set insecure_http: true on this workspace"
    ]
    config = validate_config(
        {"workspaces": [workspace(instance=None, url=url, insecure_http=True)]}, environ=ENV
    )
    assert config.workspaces[0].insecure_http is True
    assert (
        validate_config({"workspaces": [workspace()]}, environ=ENV).workspaces[0].insecure_http
        is False
    )
    assert problems({"workspaces": [workspace(insecure_http="maybe")]}) == [
        "workspaces[0].insecure_http: Input should be a valid boolean, unable to interpret input"
    ]


@pytest.mark.parametrize(
    ("poll", "found"),
    [
        ({"concurrency": True}, "poll.concurrency: Input should be a valid integer"),
        ({"length": True}, "poll.length: Input should be a valid integer"),
        ({"length": 3.0}, "poll.length: Input should be a valid integer"),
        ({"length": "3"}, "poll.length: Input should be a valid integer"),
        (
            {"interval": "٣"},
            "poll.interval: invalid duration '٣': use e.g. 30s, 15m, 1h or a number of seconds",
        ),
        (
            {"interval": "\uff13m"},
            "poll.interval: invalid duration '\uff13m': use e.g. 30s, 15m, 1h or a number of "
            "seconds",
        ),
        (
            {"interval": "1_000"},
            "poll.interval: invalid duration '1_000': use e.g. 30s, 15m, 1h or a number of seconds",
        ),
        (
            {"interval": "inf"},
            "poll.interval: invalid duration 'inf': use e.g. 30s, 15m, 1h or a number of seconds",
        ),
    ],
)
def test_booleans_are_not_numbers_and_digits_are_ascii(poll: dict[str, object], found: str) -> None:
    """`concurrency: true`, `length: true` and `interval: '٣'` were 1, 1 and 3 s."""
    assert problems({"poll": poll, "workspaces": [workspace()]}) == [found]


def test_merge_keys(tmp_path: Path) -> None:
    """`<<: *defaults` was refused: "could not determine a constructor for the tag merge"."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "poll: &poll {interval: 15m, timeout: 10s, length: 3}\n"
        "workspaces:\n"
        "  - &prod\n"
        "    name: prod\n"
        "    instance: US-03\n"
        "    api_key_env: BRAZE_KEY\n"
        "    time_zone: Europe/Berlin\n"
        "    apps: [{name: ios, id: app-1}]\n"
        "  - <<: *prod\n"
        "    name: eu\n"
        "    instance: EU-01   # overrides the merged value\n"
        "  - <<: [{name: first, instance: US-01}, {name: second, api_key_env: BRAZE_KEY}]\n"
    )
    config = load_config(path, ENV)
    prod, eu, first = config.workspaces
    assert (eu.name, eu.instance, eu.time_zone, eu.apps) == (
        "eu",
        "EU-01",
        "Europe/Berlin",
        prod.apps,
    )
    assert (first.name, first.instance) == ("first", "US-01")  # the first mapping listed wins


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "a: &a {x: 1}\nb: {<<: *a, y: 2, y: 3}\n",
            ["b.y: key given twice (line 2, column 13 and line 2, column 19)"],
        ),
        (
            "a: &a {x: 1}\nb: {<<: *a, <<: *a}\n",
            ["b['<<']: key given twice (line 2, column 5 and line 2, column 13)"],
        ),
        (
            "b: {<<: 5}\n",
            ["b: a merge key (<<) takes a mapping or a list of mappings (line 1, column 9)"],
        ),
        (
            "b: {<<: [{x: 1}, [2]]}\n",
            ["b: a merge key (<<) takes a mapping or a list of mappings (line 1, column 9)"],
        ),
        (
            "a: &a {<<: *a}\n",
            ["a: an alias refers to a collection that contains it (line 1, column 4)"],
        ),
    ],
)
def test_merge_key_mistakes(tmp_path: Path, text: str, found: list[str]) -> None:
    assert load_problems(tmp_path / "c.yaml", text) == found
