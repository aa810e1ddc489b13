"""The exporter's configuration: a typed, immutable model, its loading, every validation message.

A config is validated whole before anything starts. All problems are reported at once, each
prefixed with its key path (``workspaces[0].apps[1].id: ...``), in a single `ConfigError`.
API keys are not fields of the model: the model names where each key lives (an environment
variable or a file); validation reads and checks the key once and keeps it beside the
workspace, where `read_api_key` finds it when a client is built. No message ever holds a key.
"""

from __future__ import annotations

import difflib
import functools
import os
import zoneinfo
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from exporter.config_values import (
    KeyProblem,
    check_url,
    duration_within,
    key_from_env,
    key_from_file,
    one_line,
    parse_duration,
    printable,
)
from exporter.config_yaml import DocumentError, FileProblem, key_path, load_yaml, read_regular_file
from exporter.kpis import SUPPORTED_KPIS

__all__ = [
    "INSTANCE_URLS",
    "AppConfig",
    "Config",
    "ConfigError",
    "PollConfig",
    "WorkspaceConfig",
    "load_config",
    "parse_duration",
    "read_api_key",
    "validate_config",
]

INSTANCE_URLS: dict[str, str] = {
    **{f"US-0{n}": f"https://rest.iad-0{n}.braze.com" for n in range(1, 9)},
    "US-10": "https://rest.us-10.braze.com",
    "EU-01": "https://rest.fra-01.braze.eu",
    "EU-02": "https://rest.fra-02.braze.eu",
    "AU-01": "https://rest.au-01.braze.com",
    "JP-01": "https://rest.jp-01.braze.com",
    "ID-01": "https://rest.id-01.braze.com",
    "KR-01": "https://rest.kr-01.braze.com",
}

CONFIG_FILE_LIMIT = 1024**2  # bytes; a real config is a few KiB
MAX_INTERVAL = 86400.0  # seconds: one day
MAX_CONCURRENCY = 64  # each client keeps a connection pool this large


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(one_line(p) for p in problems)
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{source}: {count}:\n" + "\n".join(f"  {p}" for p in self.problems))


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    if text != text.strip():
        raise ValueError(f"must not start or end with white space: {text!r}")
    return text


Interval = Annotated[float, BeforeValidator(parse_duration), duration_within(1, MAX_INTERVAL)]
Timeout = Annotated[float, BeforeValidator(parse_duration), duration_within(0, MAX_INTERVAL)]
Name = Annotated[str, Field(strict=True), AfterValidator(printable), AfterValidator(_not_blank)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollConfig(_Model):
    interval: Interval = 900.0
    timeout: Timeout = 10.0
    length: int = Field(default=3, ge=1, le=100, strict=True)
    concurrency: int = Field(default=4, ge=1, le=MAX_CONCURRENCY, strict=True)
    kpis: tuple[str, ...] = Field(default=("mau",), min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PollConfig:
        problems = []
        if self.timeout > self.interval:
            message = (
                f"must not be longer than poll.interval ({self.interval:g}s), got {self.timeout:g}s"
            )
            problems.append(_problem("timeout_too_long", message, ("timeout",), self.timeout))
        # With length 1, a series whose newest point is the current (partial) period would
        # never hold a complete one; MAU's newest point is always yesterday's.
        counting = [k for k in self.kpis if k != "mau"]
        if self.length < 2 and counting:
            message = (
                f"must be at least 2 with {', '.join(counting)}: the newest point of those is "
                "the current day or hour, which is never exported"
            )
            problems.append(_problem("too_short_for_kpis", message, ("length",), self.length))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @field_validator("kpis")
    @classmethod
    def _known_kpis(cls, kpis: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in kpis if k not in SUPPORTED_KPIS]
        if unknown:
            raise ValueError(
                f"unsupported KPI {', '.join(map(repr, unknown))}; supported: "
                + ", ".join(SUPPORTED_KPIS)
            )
        if len(set(kpis)) != len(kpis):
            raise ValueError("lists a KPI twice")
        return kpis


class AppConfig(_Model):
    name: Name
    id: Name


class WorkspaceConfig(_Model):
    name: Name
    instance: str | None = None
    insecure_http: bool = False  # before url, whose check reads it
    url: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    time_zone: str = "UTC"
    whole_workspace: bool = True
    apps: tuple[AppConfig, ...] = ()
    _api_key: SecretStr | None = PrivateAttr(default=None)  # the key validation read

    @field_validator("time_zone")
    @classmethod
    def _known_time_zone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # ValueError: not a zone key at all
            hint = difflib.get_close_matches(name, _zone_names(), n=1)
            raise ValueError(
                f"unknown time zone {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + "; use an IANA name such as UTC, Europe/Berlin or America/New_York"
            ) from None
        return name

    @field_validator("instance")
    @classmethod
    def _known_instance(cls, instance: str | None) -> str | None:
        if instance is not None and instance.upper() not in INSTANCE_URLS:
            raise ValueError(
                f"unknown instance {instance!r}; known: {', '.join(INSTANCE_URLS)} "
                "(or give the REST endpoint as url)"
            )
        return None if instance is None else instance.upper()

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        # An invalid insecure_http is missing from info.data: its own error says enough.
        check_url(url, insecure_http=info.data.get("insecure_http", True))
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _key_from_env(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None:
            _keep_key(info, ("env", name), key_from_env(name, _environ(info)))
        return name

    @field_validator("api_key_file")
    @classmethod
    def _key_from_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        context = info.context or {}
        try:
            resolved = Path(context.get("base_dir", ".")) / path.expanduser()
        except RuntimeError:  # "~" with no home directory to expand it to
            raise ValueError(f"cannot read {path}: no home directory for ~") from None
        _keep_key(info, ("file", str(resolved)), key_from_file(resolved))
        return resolved

    @field_validator("apps")
    @classmethod
    def _unique_apps(cls, apps: tuple[AppConfig, ...]) -> tuple[AppConfig, ...]:
        _require_unique("app name", [a.name for a in apps])
        _require_unique("app id", [a.id for a in apps])
        return apps

    @model_validator(mode="wrap")
    @classmethod
    def _check_key_combinations(
        cls, data: Any, handler: ModelWrapValidatorHandler[WorkspaceConfig], info: ValidationInfo
    ) -> WorkspaceConfig:
        """Checked on the raw keys too, so that they are reported along with other problems."""
        problems = _combination_problems(data) if isinstance(data, Mapping) else []
        try:
            workspace = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            # Every error as it was, its message already rendered (not every built-in error
            # type can be raised again by name: `path_type` cannot).
            others = [_problem(e["type"], e["msg"], e["loc"], e["input"]) for e in exc.errors()]
            raise ValidationError.from_exception_data(cls.__name__, [*others, *problems]) from None
        problems = problems or _combination_problems(workspace.model_dump())
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        workspace._api_key = _kept_keys(info).get(_key_source(workspace))
        return workspace

    @property
    def base_url(self) -> str:
        return self.url if self.url is not None else INSTANCE_URLS[str(self.instance)]

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The company time zone Braze cuts this workspace's days and hours in."""
        return zoneinfo.ZoneInfo(self.time_zone)


class Config(_Model):
    poll: PollConfig = PollConfig()
    workspaces: tuple[WorkspaceConfig, ...] = Field(min_length=1)

    @field_validator("workspaces")
    @classmethod
    def _unique_workspaces(
        cls, workspaces: tuple[WorkspaceConfig, ...]
    ) -> tuple[WorkspaceConfig, ...]:
        _require_unique("workspace name", [w.name for w in workspaces])
        return workspaces


def _combination_problems(data: Mapping[str, Any]) -> list[InitErrorDetails]:
    messages = [
        f"set exactly one of {a} or {b}"
        for a, b in (("instance", "url"), ("api_key_env", "api_key_file"))
        if (data.get(a) is None) == (data.get(b) is None)
    ]
    if data.get("whole_workspace", True) is False and not data.get("apps"):
        messages.append("nothing to poll: whole_workspace is false and no apps are listed")
    return [_problem("invalid_combination", m, (), data) for m in messages]


def read_api_key(workspace: WorkspaceConfig, environ: Mapping[str, str]) -> SecretStr:
    """The workspace's API key: the one read when the config was validated, else read now
    (from `environ` or the key file) with the same checks."""
    if workspace._api_key is not None:
        return workspace._api_key
    try:
        if workspace.api_key_env is not None:
            return key_from_env(workspace.api_key_env, environ)
        assert workspace.api_key_file is not None  # guaranteed by WorkspaceConfig
        return key_from_file(workspace.api_key_file)
    except KeyProblem as exc:
        raise ConfigError(workspace.name, [str(exc)]) from None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem."""
    data = read_document(path, CONFIG_FILE_LIMIT, "config file")
    if data is None:
        raise ConfigError(str(path), ["the file is empty"])
    return validate_config(data, str(path), environ, base_dir=Path(path).parent)


def read_document(path: str | Path, limit: int, what: str) -> object:
    """The YAML document of a file of at most `limit` bytes (None if empty); a ConfigError
    naming `what` if it cannot be read or parsed."""
    try:
        text = read_regular_file(Path(path), limit).decode("utf-8")
    except (FileProblem, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the {what}: {exc}"]) from None
    try:
        return load_yaml(text)
    except DocumentError as exc:
        raise ConfigError(str(path), exc.problems) from None


def validate_config(
    data: object,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
    base_dir: Path = Path(),
) -> Config:
    """Validate already-parsed config data (used by load_config and the built-in demo)."""
    context = {
        "environ": os.environ if environ is None else environ,
        "base_dir": base_dir,
        "keys": {},  # where a key was read -> the key, for read_api_key
    }
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_describe(e) for e in errors if not _consequence(e, errors)]
        raise ConfigError(source, problems) from None


def _consequence(error: Mapping[str, Any], errors: Sequence[Mapping[str, Any]]) -> bool:
    """A list too short only because its items failed: the item errors say it all."""
    loc = tuple(error["loc"])
    return error["type"] == "too_short" and any(
        len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors
    )


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context or {}
    environ: Mapping[str, str] = context.get("environ", os.environ)
    return environ


def _kept_keys(info: ValidationInfo) -> dict[tuple[str, str], SecretStr]:
    keys: dict[tuple[str, str], SecretStr] = (info.context or {}).get("keys", {})
    return keys


def _keep_key(info: ValidationInfo, source: tuple[str, str], key: SecretStr) -> None:
    _kept_keys(info)[source] = key


def _key_source(workspace: WorkspaceConfig) -> tuple[str, str]:
    if workspace.api_key_env is not None:
        return ("env", workspace.api_key_env)
    return ("file", str(workspace.api_key_file))


def _require_unique(what: str, values: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r} (entries {seen[value]} and {index})")
        seen[value] = index


@functools.cache
def _zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def _problem(
    kind: str, message: str, loc: tuple[int | str, ...], value: object
) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


def _all_field_names() -> list[str]:
    models: list[type[BaseModel]] = [Config, PollConfig, WorkspaceConfig, AppConfig]
    return sorted({name for model in models for name in model.model_fields})


def _describe(error: Mapping[str, Any]) -> str:
    loc = error["loc"]
    kind = error["type"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _all_field_names(), n=1)
        message = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "too_short":
        message = "must list at least one entry"
    elif kind == "path_type":
        message = f"must be a path, not {type(error['input']).__name__}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a mapping of keys to values, not {type(error['input']).__name__}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key_path(loc)}: {message}"
