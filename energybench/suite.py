"""Suite schema: YAML → validated objects; every error names file, line and field path.

A suite is validated whole before any run starts: the structure by pydantic,
each method's hyper-parameters by that method's own ``Settings`` model, and
cross-field rules (e.g. AdaLoRA's schedule against the run's step count) by
:func:`energybench.run.preflight.preflight`. Unknown keys are errors everywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from energybench.measure.settings import MeasureSettings
from energybench.registry import UnknownMethodError, load_method
from energybench.run.blocks import SearchSettings, TargetSettings
from energybench.run.executors.settings import ExecutorSettings
from energybench.suite_yaml import NOT_A_MAPPING, SuiteError, parse_yaml, read_suite_text
from energybench.train.settings import TrainingOverrides, TrainingSettings

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BackboneEntry(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    path: str | None = Field(None, description="local folder saved with save_pretrained(); wins over the hub")
    label: str | None = None
    shape: str | None = Field(None, description="a shape-only preset (e.g. llama-3.2-3b-shape) whose config "
                              "`energybench estimate` uses instead of the hub's; runs ignore it")

    @property
    def display(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _known_shape(self):
        if self.shape is not None:
            from energybench.models.family import all_presets

            if self.shape not in all_presets():
                raise ValueError(f"shape: unknown preset {self.shape!r}; presets: {', '.join(all_presets())}")
        return self


class TaskEntry(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    data_dir: str | None = Field(None, description="local GLUE TSV folder (glue_data/ layout)")

    @model_validator(mode="after")
    def _known(self):
        from energybench.tasks.loading import TASK_NAMES

        if self.name not in TASK_NAMES:
            raise ValueError(f"unknown task {self.name!r}; known tasks: {', '.join(TASK_NAMES)}")
        return self


class MethodEntry(BaseModel):
    """A method by registered name; every other key is that method's setting."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    label: str | None = None
    training: TrainingOverrides = TrainingOverrides()

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Suite(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    description: str = ""
    output_dir: str = Field(min_length=1)
    backbones: list[BackboneEntry] = Field(min_length=1)
    tasks: list[TaskEntry] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    training: TrainingSettings = TrainingSettings()
    measure: MeasureSettings = MeasureSettings()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    executor: ExecutorSettings = ExecutorSettings()
    search: SearchSettings | None = Field(None, description="learning-rate search per (backbone, task, method)")
    target: TargetSettings | None = Field(None, description="quality targets for cost to target")

    @field_validator("target")
    @classmethod
    def _target_names(cls, target: TargetSettings | None, info: ValidationInfo):
        if target is not None and "tasks" in info.data and "methods" in info.data:
            target.check_against([t.name for t in info.data["tasks"]],
                                 [(m.display, m.name) for m in info.data["methods"]])
        return target
    _lines: dict = PrivateAttr(default_factory=dict)  # field path -> line, when parsed from a file

    @model_validator(mode="after")
    def _unique_labels(self):
        labels = [m.display for m in self.methods]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"method labels must be unique (give repeated methods a `label`): {', '.join(sorted(dup))}")
        return self


# ---------------------------------------------------------------- line lookup


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every field path in the YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            p = path + (key.value,)
            out[p] = key.start_mark.line + 1
            _line_index(value, p, out)
            out[p] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def _line_for(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def format_loc(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s or "(top level)"


_FRIENDLY = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "extra_forbidden": "unknown key (not a field of this section)",
    "missing": "required field is missing",
}


def _message(err: dict) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx", {}) or {}
    if kind in ("greater_than", "greater_than_equal") and ctx.get("gt", ctx.get("ge")) in (0, 1) \
            and isinstance(err.get("input"), int) and not isinstance(err.get("input"), bool):
        return "must be 0 or more" if kind == "greater_than_equal" and ctx.get("ge") == 0 else \
            "must be a positive integer"
    if kind in _FRIENDLY:
        try:
            return _FRIENDLY[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    if kind == "int_parsing" or kind == "int_type":
        return f"must be an integer (got {err.get('input')!r})"
    msg = str(err.get("msg", "invalid value"))
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _errors_to_problems(file: str, lines: dict, exc: ValidationError, prefix: tuple = (),
                        skip_top_level: bool = False) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if skip_top_level and not loc:
            continue  # a cross-field rule already reported with its line (_repeated_entries)
        out.append(f"{file}:{_line_for(lines, loc)} {format_loc(loc)}: {_message(err)}")
    return out


# ---------------------------------------------------------------- loading


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file; raise :class:`SuiteError` listing every problem."""
    path = Path(path)
    text = read_suite_text(path)
    return parse_suite(text, str(path))


def parse_suite(text: str, file: str = "<suite>") -> Suite:
    node, data = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise SuiteError([f"{file}:1 {NOT_A_MAPPING}"])
    lines = _line_index(node)
    problems: list[str] = []
    suite = None
    repeated = _repeated_entries(data, file, lines)
    try:
        # strict: `batch_size: true` or `max_steps: 5.0` is a mistake, not 1 or 5
        suite = Suite.model_validate(data, strict=True)
    except ValidationError as exc:
        problems += _errors_to_problems(file, lines, exc, skip_top_level=bool(repeated))
    problems += repeated
    raw_methods = data.get("methods")
    for i, raw in enumerate(raw_methods if isinstance(raw_methods, list) else []):
        try:
            entry = MethodEntry.model_validate(raw, strict=True)
        except ValidationError:
            continue  # already reported by the structural pass
        problems += _check_method(entry, i, file, lines)
    if suite is not None and not problems:  # every method is known and valid: is it defined on each family?
        problems += _check_families(suite, file, lines)
    if problems:
        raise SuiteError(problems)
    suite._lines = lines
    return suite


def _repeated_entries(data: dict, file: str, lines: dict) -> list[str]:
    """The same method label, seed or backbone twice would train the same run twice (or clash in the report)."""
    out = []

    def check(field: str, key) -> None:
        items = data.get(field)
        if not isinstance(items, list):
            return
        first: dict = {}
        for i, item in enumerate(items):
            try:
                k = key(item)
            except (AttributeError, TypeError):
                continue
            if k is None:
                continue
            if k in first:
                j = first[k]
                out.append(f"{file}:{_line_for(lines, (field, i))} {field}[{i}]: {k!r} repeats {field}[{j}] "
                           f"(line {_line_for(lines, (field, j))}); {_REPEAT_HINT[field]}")
            else:
                first[k] = i

    check("methods", lambda m: m.get("label") or m.get("name"))
    check("seeds", lambda s: s if isinstance(s, int) and not isinstance(s, bool) else None)
    # run_id ignores the label: the same name and path is the same backbone
    check("backbones", lambda b: b.get("name") if b.get("path") is None else f"{b.get('name')} at {b.get('path')}")
    return out


_REPEAT_HINT = {
    "methods": "method labels must be unique (give repeated methods a `label`)",
    "seeds": "each seed runs once; remove the repeat",
    "backbones": "the same backbone (name and path) twice would train the same runs twice; remove the repeat",
}


def suite_line(suite: Suite, *loc) -> int | None:
    """The line of field path ``loc`` in the file ``suite`` was parsed from (None if it was not parsed from one)."""
    lines = getattr(suite, "_lines", None)
    return _line_for(lines, loc) if lines else None


def _check_method(entry: MethodEntry, i: int, file: str, lines: dict) -> list[str]:
    loc = ("methods", i)
    try:
        cls = load_method(entry.name)
    except UnknownMethodError as exc:
        return [f"{file}:{_line_for(lines, loc + ('name',))} {format_loc(loc + ('name',))}: {exc}"]
    try:
        cls.Settings.model_validate(entry.settings_dict)
    except ValidationError as exc:
        return _errors_to_problems(file, lines, exc, prefix=loc)
    return []


def _check_families(suite: Suite, file: str, lines: dict) -> list[str]:
    """Every method must be defined on every backbone's model family; say which, and why not.

    Families known without network (presets, packaged checkpoints, local
    folders) are checked here; a hub name's family is checked by preflight
    once its config is reachable.
    """
    out = []
    for i, b in enumerate(suite.backbones):
        family = family_for(b)
        if family is None:
            continue
        for j, m in enumerate(suite.methods):
            reason = load_method(m.name).unsupported_reason(family)
            if reason:
                loc = ("methods", j, "name")
                out.append(f"{file}:{_line_for(lines, loc)} {format_loc(loc)} ({m.display}) with backbones[{i}] "
                           f"({b.display}): {reason}")
    return out


def family_for(b: BackboneEntry) -> str | None:
    """The model family of a suite's backbone when it is known without the network (else None)."""
    from energybench.models.backbones import backbone_family
    from energybench.models.family import all_presets
    from energybench.models.packaged import PACKAGED

    if b.path is None and b.name not in all_presets() and b.name not in PACKAGED:
        return None
    if b.path is not None and not (Path(b.path) / "config.json").exists():
        return None
    return backbone_family(b.name, b.path)


def with_data_dir(suite: Suite, data_dir: str) -> Suite:
    """The suite with every GLUE task read from ``data_dir`` (a glue_data/ folder: SST-2/train.tsv, …).

    ``energybench run SUITE --data-dir DIR``; synthetic tasks are left alone.
    The folder becomes part of each task's configuration (and so of its run id).
    """
    from energybench.tasks.glue import GLUE_SPECS

    tasks = [t.model_copy(update={"data_dir": str(data_dir)}) if t.name in GLUE_SPECS else t for t in suite.tasks]
    return suite.model_copy(update={"tasks": tasks})


def method_settings(entry: MethodEntry):
    return load_method(entry.name).Settings.model_validate(entry.settings_dict)


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
