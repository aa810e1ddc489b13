from pathlib import Path

import pytest

from exporter.config import (
    INSTANCE_URLS,
    ConfigError,
    load_config,
    parse_duration,
    read_api_key,
    validate_config,
)

ENV = {"BRAZE_KEY": "secret-key-123"}
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
    config = load_config(REPO_ROOT / "config.yaml", {"BRAZE_API_KEY": "k"})
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
    (tmp_path / "key").write_text("  file-key-456\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "workspaces:\n"
        "  - {name: a, instance: US-01, api_key_env: BRAZE_KEY}\n"
        "  - {name: b, instance: US-02, api_key_file: key}\n"  # relative to the config file
    )
    config = load_config(config_file, ENV)
    a, b = config.workspaces
    assert read_api_key(a, ENV).get_secret_value() == "secret-key-123"
    assert read_api_key(b, ENV).get_secret_value() == "file-key-456"
    assert "file-key-456" not in repr(config) and "secret-key-123" not in repr(config)
    assert "file-key-456" not in repr(read_api_key(b, ENV))


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
            "invalid YAML at line 2, column 1: duplicate key 'poll'",
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
        "'api_key_env': 'K', 'time_zone': 'America/New_York'}]}, environ={'K': 'k'}); "
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
