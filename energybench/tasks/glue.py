"""GLUE tasks from the Hugging Face hub or a local ``glue_data/`` TSV folder.

The TSV reader follows the classic layout of GLUE's download script
(``SST-2/train.tsv``, ``SST-2/dev.tsv``, MNLI's ``dev_matched.tsv`` and
``dev_mismatched.tsv``). Column positions differ per task, and CoLA has no
header; a malformed row fails with the file and line it is on.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from energybench.tasks.base import Example, TaskData, TaskSpec
from energybench.tasks.splits import read_protocol_split

GLUE_SPECS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", "cola sentence:", "sentence", None, ("unacceptable", "acceptable"), "matthews"),
    "sst2": TaskSpec("sst2", "sst2 sentence:", "sentence", None, ("negative", "positive"), "accuracy"),
    "mrpc": TaskSpec("mrpc", "mrpc sentence1:", "sentence1", "sentence2", ("not_equivalent", "equivalent"), "f1_accuracy"),
    "qqp": TaskSpec("qqp", "qqp question1:", "question1", "question2", ("not_duplicate", "duplicate"), "f1_accuracy"),
    "stsb": TaskSpec("stsb", "stsb sentence1:", "sentence1", "sentence2", None, "pearson_spearman"),
    "mnli": TaskSpec("mnli", "mnli hypothesis:", "premise", "hypothesis", ("entailment", "neutral", "contradiction"), "accuracy"),
    "qnli": TaskSpec("qnli", "qnli question:", "question", "sentence", ("entailment", "not_entailment"), "accuracy"),
    "rte": TaskSpec("rte", "rte sentence1:", "sentence1", "sentence2", ("entailment", "not_entailment"), "accuracy"),
}

# Second-field prefixes used by T5's text-to-text format.
SECOND_PREFIX = {"mrpc": "sentence2:", "qqp": "question2:", "stsb": "sentence2:", "mnli": "premise:",
                 "qnli": "sentence:", "rte": "sentence2:"}

HUB_DATASET = "nyu-mll/glue"


class TaskDataError(ValueError):
    """Task data is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class TsvLayout:
    folder: str
    header: bool
    text_a: str | int
    text_b: str | int | None
    label: str | int
    label_map: dict[str, int] | None = None  # None: numeric label


_NLI = {"entailment": 0, "not_entailment": 1}
TSV_LAYOUTS: dict[str, TsvLayout] = {
    "cola": TsvLayout("CoLA", False, 3, None, 1),
    "sst2": TsvLayout("SST-2", True, "sentence", None, "label"),
    "mrpc": TsvLayout("MRPC", True, "#1 String", "#2 String", "Quality"),
    "qqp": TsvLayout("QQP", True, "question1", "question2", "is_duplicate"),
    "stsb": TsvLayout("STS-B", True, "sentence1", "sentence2", "score"),
    "mnli": TsvLayout("MNLI", True, "sentence1", "sentence2", "gold_label",
                      {"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": TsvLayout("QNLI", True, "question", "sentence", "label", _NLI),
    "rte": TsvLayout("RTE", True, "sentence1", "sentence2", "label", _NLI),
}


def _read_tsv(path: Path, layout: TsvLayout, regression: bool) -> list[Example]:
    if not path.exists():
        raise TaskDataError(
            f"{path}: file not found — expected the GLUE TSV layout ({layout.folder}/train.tsv, "
            f"{layout.folder}/dev.tsv; see README, \"Local data\")"
        )
    try:
        return _parse_tsv(path, layout, regression)
    except (UnicodeDecodeError, csv.Error) as exc:  # not text, or a broken quote: name the file, never a traceback
        raise TaskDataError(f"{path}: not a readable UTF-8 TSV ({type(exc).__name__}: {exc})") from None
    except IsADirectoryError:
        raise TaskDataError(f"{path}: is a directory, not a TSV file") from None


def _parse_tsv(path: Path, layout: TsvLayout, regression: bool) -> list[Example]:
    csv.field_size_limit(sys.maxsize)
    examples = []
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None) if layout.header else None
        if layout.header and header is None:
            raise TaskDataError(f"{path}:1: empty file")

        def col(key: str | int) -> int:
            if isinstance(key, int):
                return key
            if key not in header:
                raise TaskDataError(f"{path}:1: header has no column {key!r} (columns: {', '.join(header)})")
            return header.index(key)

        ia, il = col(layout.text_a), col(layout.label)
        ib = col(layout.text_b) if layout.text_b is not None else None
        first_line = 2 if layout.header else 1
        for lineno, row in enumerate(rows, start=first_line):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                raw = row[il].strip()
                if layout.label_map is not None:
                    label = layout.label_map[raw]
                else:
                    label = float(raw) if regression else int(raw)
                examples.append(Example(row[ia], row[ib] if ib is not None else None, label))
            except (IndexError, KeyError, ValueError) as exc:
                raise TaskDataError(
                    f"{path}:{lineno}: malformed row ({type(exc).__name__}: {exc}); "
                    f"expected {max(x for x in (ia, ib or 0, il)) + 1}+ tab-separated columns"
                ) from None
    return examples


def load_glue_tsv(task: str, data_dir: str | Path) -> TaskData:
    """Read ``data_dir/<Task>/{train,dev}.tsv`` and apply READ's split protocol."""
    spec, layout = GLUE_SPECS[task], TSV_LAYOUTS[task]
    root = Path(data_dir)
    folder = root / layout.folder if (root / layout.folder).is_dir() else root
    if not folder.is_dir():
        raise TaskDataError(f"tasks.data_dir {str(root)!r} does not exist")
    read = lambda name: _read_tsv(folder / name, layout, spec.is_regression)  # noqa: E731
    train = read("train.tsv")
    if task == "mnli":
        tr, va, te = read_protocol_split(train, read("dev_matched.tsv"), validation_mismatched=read("dev_mismatched.tsv"))
    else:
        tr, va, te = read_protocol_split(train, read("dev.tsv"))
    return TaskData(spec, tr, va, te, source=str(folder))


def load_glue_hub(task: str) -> TaskData:
    """Load through ``datasets.load_dataset('nyu-mll/glue', task)`` (needs the hub or its cache)."""
    from datasets import load_dataset

    spec = GLUE_SPECS[task]
    ds = load_dataset(HUB_DATASET, task)

    def convert(split) -> list[Example]:
        return [Example(r[spec.field_a], r[spec.field_b] if spec.field_b else None,
                        float(r["label"]) if spec.is_regression else int(r["label"])) for r in split]

    train = convert(ds["train"])
    if task == "mnli":
        tr, va, te = read_protocol_split(train, convert(ds["validation_matched"]),
                                         validation_mismatched=convert(ds["validation_mismatched"]))
    else:
        tr, va, te = read_protocol_split(train, convert(ds["validation"]))
    return TaskData(spec, tr, va, te, source=f"hub:{HUB_DATASET}/{task}")


def glue_missing_message(task: str) -> str:
    layout = TSV_LAYOUTS[task]
    return (
        f"task {task!r}: data set {HUB_DATASET!r} ({task}) is not in the local datasets cache and the hub "
        f"cannot be reached. Point the task at a local copy in the GLUE TSV layout: "
        f"`tasks: [{{name: {task}, data_dir: /path/to/glue_data}}]` with {layout.folder}/train.tsv and "
        f"{layout.folder}/{'dev_matched.tsv, dev_mismatched.tsv' if task == 'mnli' else 'dev.tsv'} inside "
        f"(see README, \"Local data\")."
    )


def check_glue_available(task: str, data_dir: str | None) -> str | None:
    """A reason the task's data cannot be loaded, or None. Cheap: no full read."""
    layout = TSV_LAYOUTS[task]
    if data_dir is not None:
        root = Path(data_dir)
        folder = root / layout.folder if (root / layout.folder).is_dir() else root
        needed = ["train.tsv"] + (["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"])
        missing = [n for n in needed if not (folder / n).exists()]
        if not root.exists():
            return f"tasks.data_dir {data_dir!r} does not exist"
        if missing:
            return (f"folder {folder} has no {', '.join(missing)} — expected the GLUE TSV layout "
                    f"({layout.folder}/train.tsv, {layout.folder}/dev.tsv; see README, \"Local data\")")
        return None
    from energybench.models.hub import dataset_cached, hub_reachable

    if dataset_cached(HUB_DATASET, task) or hub_reachable():
        return None
    return glue_missing_message(task)
