"""Reading a suite's YAML safely: bounded in size and alias expansion, no duplicate keys, finite numbers only.

PyYAML alone accepts inputs that are dangerous or silently wrong for a suite:

- a "billion laughs" document (nine levels of nine aliases) is small on disk but
  expands to 9**9 nodes for anything that walks it — the line index, pydantic;
- a 50 MB file is parsed whole before anything can say it is not a suite;
- a key given twice (``training:`` twice) keeps the last value and drops the first
  block without a word;
- ``.inf`` / ``.nan`` are valid YAML floats, and no field of a suite means them.

:func:`load_yaml` refuses all four with :class:`YamlProblem` errors that name the
line, before any validation runs. The document is parsed once, by libyaml where
PyYAML was built with it (ten times faster than the pure-Python parser).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

MAX_SUITE_BYTES = 1_000_000
MAX_NODES = 20_000  # nodes after alias expansion; a large real suite has a few hundred


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loading, plus YAML 1.2's floats: PyYAML (YAML 1.1) reads ``1e-3`` (no dot) as a string, which a
    strict schema would then refuse as "not a number"."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$""", re.X),
    list("-+0123456789"))


@dataclass
class YamlProblem:
    line: int
    message: str


class YamlRefused(ValueError):
    """The document cannot be read as a suite; ``problems`` carry 1-based lines."""

    def __init__(self, problems: list[YamlProblem]):
        self.problems = problems
        super().__init__("; ".join(f"line {p.line}: {p.message}" for p in problems))


class SuiteError(ValueError):
    """A suite that cannot be run; the message names file:line and field path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def check_size(n_bytes: int) -> None:
    if n_bytes > MAX_SUITE_BYTES:
        raise YamlRefused([YamlProblem(1, f"the file is {n_bytes:,} bytes; a suite may be at most "
                                          f"{MAX_SUITE_BYTES:,} bytes (1 MB)")])


def read_suite_text(path: Path) -> str:
    """The suite file's text; :class:`SuiteError` (file:line) for a directory, a missing, oversized,
    unreadable or non-UTF-8 file — checked before anything heavy is imported or parsed."""
    file = str(path)
    try:
        if path.is_dir():
            raise SuiteError([f"{file}: is a directory; give a suite's YAML file"])
        check_size(path.stat().st_size)
        raw = path.read_bytes()
        check_size(len(raw))
    except FileNotFoundError:
        raise SuiteError([f"{file}: suite file not found"]) from None
    except YamlRefused as exc:
        raise SuiteError([f"{file}:{p.line} {p.message}" for p in exc.problems]) from None
    except OSError as exc:
        raise SuiteError([f"{file}: cannot read the suite file ({exc.strerror or exc})"]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError([f"{file}:{line} not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save the suite as UTF-8"]) from None


def parse_yaml(text: str, file: str) -> tuple[yaml.Node | None, object]:
    """:func:`load_yaml` with its problems (and YAML syntax errors) as a :class:`SuiteError` naming file:line."""
    try:
        return load_yaml(text)
    except YamlRefused as exc:
        raise SuiteError([f"{file}:{p.line} {p.message}" for p in exc.problems]) from None
    except yaml.reader.ReaderError as exc:  # a control character; its position is in characters
        line = text[: exc.position].count("\n") + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SuiteError([f"{file}:{line} (YAML syntax): unacceptable character {char}: {exc.reason}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        why = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line per problem
        raise SuiteError([f"{file}:{line} (YAML syntax): {why}"]) from None


def prescreen(path: str | Path) -> None:
    """Read and parse a suite file with nothing but PyYAML: the cheap refusals (size, encoding, syntax,
    bombs, duplicate keys, non-finite numbers) in a fraction of a second, before torch is imported."""
    path = Path(path)
    _, data = parse_yaml(read_suite_text(path), str(path))
    if not isinstance(data, dict):
        raise SuiteError([f"{path}:1 {NOT_A_MAPPING}"])


NOT_A_MAPPING = "(top level): a suite is a mapping of fields (name, backbones, tasks, methods, ...)"


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded, without expanding them (memoised per node).

    Raises on a recursive alias (a node that contains itself) or past :data:`MAX_NODES`."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                raise YamlRefused([YamlProblem(node.start_mark.line + 1,
                                               f"aliases expand to more than {MAX_NODES:,} values (a YAML bomb?); "
                                               "a suite needs far fewer")])
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused([YamlProblem(node.start_mark.line + 1, "a recursive alias (a value that contains "
                                                                     "itself) cannot be a suite field")])
        on_path.add(key)
        stack.append((node, True))
        for c in _children(node):
            if id(c) not in sizes:
                stack.append((c, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _lint(root: yaml.Node) -> list[YamlProblem]:
    """Duplicate keys and non-finite numbers, each node visited once (aliases are not re-walked)."""
    problems: list[YamlProblem] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode):
                    line = k.start_mark.line + 1
                    if k.value in first:
                        problems.append(YamlProblem(line, f"duplicate key {k.value!r} (first given at line "
                                                          f"{first[k.value]}, again at line {line}); "
                                                          "YAML would silently keep only the last one"))
                    else:
                        first[k.value] = line
        elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:float":
            text = node.value.replace("_", "").lower()
            try:
                value = math.inf if ("inf" in text or "nan" in text) else float(text)
            except ValueError:  # e.g. sexagesimal 1:30.5; YAML's own constructor reads those
                value = 0.0
            if not math.isfinite(value):
                problems.append(YamlProblem(node.start_mark.line + 1,
                                            f"{node.value!r} is not a finite number; suite numbers must be finite"))
        stack.extend(_children(node))
    return problems


def load_yaml(text: str) -> tuple[yaml.Node | None, object]:
    """Parse ``text`` once; return its node tree (for line numbers) and its Python value.

    Raises :class:`YamlRefused` (size, aliases, duplicates, non-finite numbers) or ``yaml.YAMLError`` (syntax)."""
    check_size(len(text.encode("utf-8", errors="replace")))
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _expanded_size(node)
        problems = _lint(node)
        if problems:
            raise YamlRefused(sorted(problems, key=lambda p: p.line))
        return node, loader.construct_document(node)
    finally:
        loader.dispose()
