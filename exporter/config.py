"""The exporter's configuration: a typed, immutable model, its loading, every validation message.

A config is validated whole before anything starts. All problems are reported at once, each
prefixed with its key path (``workspaces[0].apps[1].id: ...``), in a single `ConfigError`.
API keys are not part of the model: the model names where each key lives (an environment
variable or a file) and `read_api_key` fetches it when a client is built.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from exporter.kpis import SUPPORTED_KPIS

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

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{source}: {count}:\n" + "\n".join(f"  {p}" for p in problems))


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus-style duration ("30s", "15m", "1h30m", "500ms") or a number."""
    if isinstance(value, bool):
        raise ValueError(
            f"invalid duration {value!r}: use e.g. 30s, 15m, 1h or a number of seconds"
        )
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 15m, 1h or a number of seconds")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _positive(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"must be greater than 0, got {seconds:g}")
    return seconds


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    if text != text.strip():
        raise ValueError(f"must not start or end with white space: {text!r}")
    return text


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Name = Annotated[str, Field(strict=True), AfterValidator(_not_blank)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollConfig(_Model):
    interval: Duration = 900.0
    timeout: Duration = 10.0
    length: int = Field(default=3, ge=1, le=100)
    concurrency: int = Field(default=4, ge=1)
    kpis: tuple[str, ...] = Field(default=("mau",), min_length=1)

    @model_validator(mode="after")
    def _room_for_a_complete_point(self) -> PollConfig:
        """With length 1, a series whose newest point is the current (partial) period would
        never hold a complete one; MAU's newest point is always yesterday's."""
        counting = [k for k in self.kpis if k != "mau"]
        if self.length < 2 and counting:
            message = (
                f"must be at least 2 with {', '.join(counting)}: the newest point of those is "
                "the current day or hour, which is never exported"
            )
            problem = PydanticCustomError("too_short_for_kpis", message)
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=problem, loc=("length",), input=self.length)],
            )
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
    url: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    time_zone: str = "UTC"
    whole_workspace: bool = True
    apps: tuple[AppConfig, ...] = ()

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
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
            raise ValueError(f"not an http(s) URL: {url!r}")
        return None if url is None else url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_var_set(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and not _environ(info).get(name, "").strip():
            raise ValueError(f"environment variable {name} is not set or empty")
        return name

    @field_validator("api_key_file")
    @classmethod
    def _key_file_readable(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        context = info.context or {}
        resolved = Path(context.get("base_dir", ".")) / path.expanduser()
        try:
            key = resolved.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {resolved}: {_reason(exc)}") from None
        if not key:
            raise ValueError(f"{resolved} is empty")
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
        cls, data: Any, handler: ModelWrapValidatorHandler[WorkspaceConfig]
    ) -> WorkspaceConfig:
        """Checked on the raw keys too, so that they are reported along with other problems."""
        problems = _combination_problems(data) if isinstance(data, Mapping) else []
        try:
            workspace = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            others = [
                InitErrorDetails(
                    type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {})
                )
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, [*others, *problems]) from None
        problems = problems or _combination_problems(workspace.model_dump())
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
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
    return [
        InitErrorDetails(type=PydanticCustomError("invalid_combination", m), loc=(), input=data)
        for m in messages
    ]


def read_api_key(workspace: WorkspaceConfig, environ: Mapping[str, str]) -> SecretStr:
    """The workspace's API key, read now from its environment variable or file."""
    if workspace.api_key_env is not None:
        key = environ.get(workspace.api_key_env, "").strip()
        where = f"environment variable {workspace.api_key_env}"
    else:
        assert workspace.api_key_file is not None  # guaranteed by WorkspaceConfig
        where = str(workspace.api_key_file)
        try:
            key = workspace.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"cannot read API key from {where}: {_reason(exc)}"
            raise ConfigError(workspace.name, [problem]) from None
    if not key:
        raise ConfigError(workspace.name, [f"API key in {where} is empty"])
    return SecretStr(key)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [f"cannot read the config file: {_reason(exc)}"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    if data is None:
        raise ConfigError(source, ["the file is empty"])
    return validate_config(data, source, environ, base_dir=Path(path).parent)


def validate_config(
    data: object,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
    base_dir: Path = Path(),
) -> Config:
    """Validate already-parsed config data (used by load_config and the built-in demo)."""
    context = {"environ": os.environ if environ is None else environ, "base_dir": base_dir}
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


def _require_unique(what: str, values: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r} (entries {seen[value]} and {index})")
        seen[value] = index


@functools.cache
def _zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _key_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


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
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a mapping of keys to values, not {type(error['input']).__name__}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return f"{_key_path(loc)}: {message}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"invalid YAML{where}: {problem}"


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (the later would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
