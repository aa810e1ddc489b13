"""Reading the config's files: bounded reads of regular files, and YAML into plain data.

Files are read only if they are regular files under a size cap, so that a FIFO, a device or
a huge file fails at once rather than blocking or filling memory.

YAML is loaded stricter than `yaml.safe_load`: mapping keys must be strings and may not be
given twice, merge keys (``<<``) are supported, and documents that are too deep or expand to
too much through aliases are refused. Problems of the document's structure are reported
together, each with its key path; the model's own rules come later, in `exporter.config`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

import yaml

MAX_DEPTH = 50  # nested mappings and lists; a real config needs 4
# Values in the document, and again with every alias and merge key expanded: a real config
# holds a few hundred; 100,000 is some 20,000 apps, and still parses in seconds.
MAX_VALUES = 100_000

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
# The pattern of each type PyYAML recognises in plain text (int, float, bool, null, timestamp).
_IMPLICIT: dict[str, re.Pattern[str]] = {
    tag: pattern
    for resolvers in yaml.SafeLoader.yaml_implicit_resolvers.values()
    for tag, pattern in resolvers
}
_SCALAR_TAGS = {
    _STR,
    _INT,
    *(f"tag:yaml.org,2002:{t}" for t in ("float", "bool", "null", "timestamp")),
}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class FileProblem(Exception):
    """A file that `read_regular_file` refuses; the message says why, in a few words."""


class DocumentError(Exception):
    """The YAML document cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def read_regular_file(path: Path, limit: int) -> bytes:
    """The contents of a regular file of at most `limit` bytes; raise FileProblem otherwise.

    The file is checked with stat before it is opened, since opening a FIFO for reading blocks
    until a writer comes, and opening some devices has effects of its own."""
    try:
        status = os.stat(path)
        if not _regular(status):
            raise FileProblem(f"not a regular file ({_kind(status.st_mode)})")
        if status.st_size > limit:
            raise FileProblem(f"larger than {_size(limit)}")
        # O_NONBLOCK: a FIFO put in its place since the check must not block the open either.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(descriptor, "rb") as file:
            if not _regular(os.fstat(file.fileno())):
                raise FileProblem("not a regular file")
            data = file.read(limit + 1)
    except OSError as exc:
        raise FileProblem(exc.strerror or str(exc)) from None
    except ValueError as exc:  # a NUL byte or an unencodable character in the path
        raise FileProblem(f"not a usable path ({exc})") from None
    if len(data) > limit:
        raise FileProblem(f"larger than {_size(limit)}")
    return data


def _regular(status: os.stat_result) -> bool:
    return stat.S_ISREG(status.st_mode)


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _size(limit: int) -> str:
    return f"{limit // 1024**2} MiB" if limit >= 1024**2 else f"{limit // 1024} KiB"


def key_path(loc: Sequence[int | str]) -> str:
    """A location as a key path: ``workspaces[0].apps[1].id``; odd keys quoted: ``poll['a b']``."""
    path = ""
    for part in loc:
        if isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path or "(top level)"


def load_yaml(text: str) -> object:
    """The data of a YAML document (None if it has none); raise DocumentError listing problems."""
    try:
        loader = _BoundedLoader(text)  # its reader checks every character at once
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise DocumentError([_syntax_problem(exc, text)]) from None
    if node is None:
        return None
    builder = _Builder(loader)
    try:
        data = builder.build(node, (), 0)
    except _TooLarge:
        message = f"the document holds more than {MAX_VALUES} values with its aliases expanded"
        raise DocumentError([message]) from None
    if builder.problems:
        raise DocumentError(builder.problems)
    return data


def _syntax_problem(exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        return (
            f"invalid YAML at line {line}, column {column}: "
            f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = getattr(exc, "context", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"invalid YAML{where}: " + (f"{context}, {problem}" if context else problem)


def _at(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def shorten(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer stops at MAX_DEPTH levels of nesting or MAX_VALUES nodes.

    PyYAML's composer recurses once per level, so a document of 10,000 ``[`` would exhaust
    the stack (the parser below it keeps an explicit stack and is safe at any depth); and
    each node costs some hundreds of bytes, so a dense document is stopped early."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            self._refuse(f"more than {MAX_VALUES} values")
        if not self.check_event(yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                self._refuse(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _refuse(self, problem: str) -> NoReturn:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        raise yaml.composer.ComposerError(None, None, problem, mark)


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns a composed node graph into plain data, collecting problems with their key paths.

    Each node is built once and shared wherever aliases point at it, as PyYAML does; the
    count of values as if every alias were expanded is kept below MAX_VALUES, since the
    model's validation walks the expanded tree. Recursion is bounded by MAX_DEPTH."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader  # it constructs scalars
        self._built: dict[int, tuple[object, int, int]] = {}  # id -> (value, size, height)
        self._building: set[int] = set()
        self._values = 0
        self.problems: list[str] = []

    def build(self, node: yaml.Node, path: tuple[int | str, ...], depth: int) -> object:
        if id(node) in self._building:
            self._problem(path, f"an alias refers to a collection that contains it ({_at(node)})")
            return None
        if id(node) in self._built:
            value, size, height = self._built[id(node)]
            if depth + height > MAX_DEPTH:
                self._problem(path, f"nested more than {MAX_DEPTH} levels deep through an alias")
            self._count(size)
            return value
        before = self._values
        self._count(1)
        self._building.add(id(node))
        try:
            value, height = self._build_new(node, path, depth)
        finally:
            self._building.discard(id(node))
        self._built[id(node)] = (value, self._values - before, height)
        return value

    def _build_new(
        self, node: yaml.Node, path: tuple[int | str, ...], depth: int
    ) -> tuple[object, int]:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path), 0
        if depth >= MAX_DEPTH:
            self._problem(path, f"nested more than {MAX_DEPTH} levels deep through an alias")
            return None, 0
        expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
        if node.tag != expected:
            self._problem(path, f"unsupported tag {_shown_tag(node.tag)} ({_at(node)})")
            return None, 0
        if isinstance(node, yaml.SequenceNode):
            items = [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
            return items, 1 + self._height(node.value)
        assert isinstance(node, yaml.MappingNode)  # the composer makes only these three
        mapping = self._mapping(node, path, depth)
        return mapping, 1 + self._height(value for _, value in node.value)

    def _height(self, nodes: Iterable[yaml.Node]) -> int:
        """The deepest nesting below these built nodes (0 if none is a collection)."""
        return max((self._built[id(n)][2] for n in nodes if id(n) in self._built), default=0)

    def _scalar(self, node: yaml.ScalarNode, path: tuple[int | str, ...]) -> object:
        if node.tag not in _SCALAR_TAGS:
            self._problem(path, f"unsupported tag {_shown_tag(node.tag)} ({_at(node)})")
            return None
        pattern = _IMPLICIT.get(node.tag)
        if pattern is not None and not pattern.match(node.value):
            # An explicit tag on text that is not of its type (`!!int ""`, `!!bool x`):
            # PyYAML's constructors fail on those with IndexError, KeyError, AttributeError.
            value = shorten(str(node.value))
            self._problem(path, f"not a valid {_tag_name(node.tag)}: {value!r} ({_at(node)})")
            return None
        try:
            return self._loader.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self._problem(path, f"{problem} ({_at(node)})")
        except ValueError:  # int() beyond Python's digit limit, a date that does not exist
            if node.tag == _INT:
                self._problem(path, f"an integer with too many digits ({_at(node)})")
            else:
                value = shorten(str(node.value))
                self._problem(path, f"not a valid {_tag_name(node.tag)}: {value!r} ({_at(node)})")
        return None

    def _mapping(
        self, node: yaml.MappingNode, path: tuple[int | str, ...], depth: int
    ) -> dict[str, object]:
        explicit: dict[str, object] = {}
        first: dict[str, yaml.Node] = {}  # key -> the node where it was given
        merged: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = "<<" if key_node.tag == _MERGE else self._key(key_node, path)
            if key is None:
                continue
            if key in first:
                where = f"{_at(first[key])} and {_at(key_node)}"
                self._problem((*path, key), f"key given twice ({where})")
                continue
            first[key] = key_node
            if key_node.tag == _MERGE:
                for source in self._merge_sources(value_node, path, depth):
                    self._count(len(source))
                    for name, value in source.items():
                        merged.setdefault(name, value)  # the first source given wins
            else:
                explicit[key] = self.build(value_node, (*path, key), depth + 1)
        # Explicit keys override merged ones (YAML's merge key type).
        return {**{k: v for k, v in merged.items() if k not in explicit}, **explicit}

    def _key(self, node: yaml.Node, path: tuple[int | str, ...]) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return str(node.value)
        if isinstance(node, yaml.ScalarNode):
            found = f"{_tag_name(node.tag)} {shorten(str(node.value))!r}"
            hint = "; quote it to make it a string"
        else:
            found = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            hint = ""
        self._problem(path, f"mapping keys must be strings, found {found} at {_at(node)}{hint}")
        return None

    def _merge_sources(
        self, node: yaml.Node, path: tuple[int | str, ...], depth: int
    ) -> list[dict[str, object]]:
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not all(isinstance(n, yaml.MappingNode) for n in nodes):
            problem = f"a merge key (<<) takes a mapping or a list of mappings ({_at(node)})"
            self._problem(path, problem)
            return []
        sources = [self.build(n, path, depth + 1) for n in nodes]
        return [s for s in sources if isinstance(s, dict)]

    def _count(self, values: int) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _TooLarge

    def _problem(self, path: tuple[int | str, ...], message: str) -> None:
        self.problems.append(f"{key_path(path)}: {message}")


def _tag_name(tag: str) -> str:
    return tag.removeprefix("tag:yaml.org,2002:")


def _shown_tag(tag: str) -> str:
    """A tag as written in YAML: ``!!set``, ``!custom``."""
    return "!!" + _tag_name(tag) if tag.startswith("tag:yaml.org,2002:") else tag
