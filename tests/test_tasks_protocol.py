"""READ's split protocol and GLUE loading, checked on sizes and properties computed by hand.

The other task tests pass with the shuffles removed or the 10k boundary moved; these do not:
- the 1k validation examples of a large task are a random draw, not train[:1000];
- 9,999 training examples is a small task (halved validation), 10,000 a large one;
- the halves of a small task's validation are a random split, not the first and second half;
- MNLI's mismatched dev file is validation and its matched one test, from TSV files and the hub alike.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from energybench.tasks.base import Example
from energybench.tasks.glue import TaskDataError, load_glue_hub, load_glue_tsv
from energybench.tasks.splits import read_protocol_split


def test_large_task_validation_is_a_random_draw_from_train_not_its_first_1k():
    train = list(range(12_000))
    tr, va, te = read_protocol_split(train, ["d"])
    assert va != train[:1000]
    # A uniform draw of 1000 of 12,000 puts ~500 below 6,000 (sd ~15); an unshuffled prefix puts all 1000 there.
    below = sum(1 for x in va if x < 6_000)
    assert 400 < below < 600
    assert max(va) > 11_000 and min(tr) < 1_000  # drawn from the whole range; train keeps early examples
    assert sorted(tr + va) == train


def test_large_task_draw_depends_on_the_split_seed_only():
    train = list(range(12_000))
    a = read_protocol_split(train, ["d"])
    assert read_protocol_split(train, ["d"]) == a
    assert read_protocol_split(train, ["d"], seed=7)[1] != a[1]


@pytest.mark.parametrize("n_train, small", [(9_999, True), (10_000, False), (10_001, False)])
def test_ten_thousand_training_examples_is_the_boundary(n_train, small):
    train, dev = list(range(n_train)), [f"d{i}" for i in range(401)]
    tr, va, te = read_protocol_split(train, dev)
    if small:  # train unchanged; the 401 dev examples halved into 200 validation + 201 test
        assert tr == train and (len(va), len(te)) == (200, 201)
        assert sorted(va + te) == sorted(dev)
    else:  # 1,000 training examples become validation; dev is the test set, as given
        assert (len(tr), len(va)) == (n_train - 1_000, 1_000) and te == dev
        assert set(va) <= set(train)


def test_small_task_validation_halves_are_a_random_split_of_the_original_validation():
    dev = list(range(1_000))
    tr, va, te = read_protocol_split([0] * 50, dev)
    assert (len(va), len(te)) == (500, 500) and sorted(va + te) == dev
    assert va != dev[:500]
    below = sum(1 for x in va if x < 500)  # ~250 for a random half (sd ~11); 500 for the first half
    assert 180 < below < 320


def _write_tsv(path, rows):
    path.write_text("sentence1\tsentence2\tgold_label\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))


def test_mnli_tsv_mismatched_dev_is_validation_and_matched_dev_is_test(tmp_path):
    folder = tmp_path / "MNLI"
    folder.mkdir()
    _write_tsv(folder / "train.tsv", [(f"train {i}", "h", "neutral") for i in range(6)])
    _write_tsv(folder / "dev_matched.tsv", [(f"matched {i}", "h", "entailment") for i in range(4)])
    _write_tsv(folder / "dev_mismatched.tsv", [(f"mismatched {i}", "h", "contradiction") for i in range(3)])
    data = load_glue_tsv("mnli", tmp_path)
    assert [e.text_a for e in data.validation] == [f"mismatched {i}" for i in range(3)]
    assert [e.text_a for e in data.test] == [f"matched {i}" for i in range(4)]
    assert {e.label for e in data.validation} == {2} and {e.label for e in data.test} == {0}
    assert len(data.train) == 6 and data.train[0] == Example("train 0", "h", 1)


def test_mnli_from_the_hub_mismatched_is_validation_and_matched_is_test(monkeypatch):
    def split(tag, n):
        return [{"premise": f"{tag} {i}", "hypothesis": "h", "label": 1} for i in range(n)]

    fake = {"train": split("train", 5), "validation_matched": split("matched", 4),
            "validation_mismatched": split("mismatched", 3)}
    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=lambda name, task: fake))
    data = load_glue_hub("mnli")
    assert [e.text_a for e in data.validation] == [f"mismatched {i}" for i in range(3)]
    assert [e.text_a for e in data.test] == [f"matched {i}" for i in range(4)]
    assert len(data.train) == 5


@pytest.mark.parametrize("task", ["sst2", "cola"])  # names sorting after and before "mnli"
def test_hub_small_task_is_halved_like_the_tsv_reader(monkeypatch, task):
    fake = {"train": [{"sentence": f"t{i}", "label": i % 2} for i in range(20)],
            "validation": [{"sentence": f"v{i}", "label": i % 2} for i in range(9)]}
    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=lambda name, task: fake))
    data = load_glue_hub(task)
    assert len(data.train) == 20 and (len(data.validation), len(data.test)) == (4, 5)
    assert {e.text_a for e in data.validation + data.test} == {f"v{i}" for i in range(9)}


def test_mismatched_split_and_seed_are_keyword_only():
    """A third positional list must not silently become MNLI's mismatched validation."""
    with pytest.raises(TypeError):
        read_protocol_split([1], [2], [3])  # type: ignore[misc]
    assert read_protocol_split([1], [2, 3], seed=1)[0] == [1]


# ------------------------------------------------------------------ the TSV reader (no torch: quick to re-run)


def test_tsv_reader_takes_columns_by_header_name_and_skips_blank_lines(tmp_path):
    folder = tmp_path / "MRPC"
    folder.mkdir()
    rows = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\ta\tb\tfirst\tsecond\n\n \t \n0\tc\td\tthird\tfourth\n"
    (folder / "train.tsv").write_text(rows)
    (folder / "dev.tsv").write_text(rows)
    data = load_glue_tsv("mrpc", tmp_path)
    assert data.train == [Example("first", "second", 1), Example("third", "fourth", 0)]
    assert data.source == str(folder)


def test_tsv_reader_reads_stsb_scores_as_floats_and_accepts_the_task_folder_itself(tmp_path):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    body = "index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.8\n1\tc\td\t0.25\n"
    (folder / "train.tsv").write_text(body)
    (folder / "dev.tsv").write_text(body)
    data = load_glue_tsv("stsb", folder)  # the task folder given directly
    assert data.train == [Example("a", "b", 3.8), Example("c", "d", 0.25)]
    assert isinstance(data.train[0].label, float)


def test_cola_without_header_reads_its_first_line_as_data(tmp_path):
    folder = tmp_path / "CoLA"
    folder.mkdir()
    (folder / "train.tsv").write_text("src\t1\t\tfirst sentence\nsrc\t0\t*\tsecond sentence\n")
    (folder / "dev.tsv").write_text("src\t1\t\tx\n")
    assert load_glue_tsv("cola", tmp_path).train == [Example("first sentence", None, 1),
                                                     Example("second sentence", None, 0)]
    (folder / "train.tsv").write_text("src\t1\t\tfine\nsrc\tnot-a-number\t\tbad\n")
    with pytest.raises(TaskDataError, match=r"CoLA/train.tsv:2: malformed row \(ValueError.*expected 4\+ tab"):
        load_glue_tsv("cola", tmp_path)


@pytest.mark.parametrize("train, match", [
    ("", r"SST-2/train.tsv:1: empty file"),
    ("text\tlabel\nhello\t1\n", r"SST-2/train.tsv:1: header has no column 'sentence' \(columns: text, label\)"),
    ("sentence\tlabel\nok\t1\nfine\tmaybe\n", r"SST-2/train.tsv:3: malformed row \(ValueError"),
])
def test_tsv_errors_name_file_and_line(tmp_path, train, match):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text(train)
    (folder / "dev.tsv").write_text("sentence\tlabel\na\t0\n")
    with pytest.raises(TaskDataError, match=match):
        load_glue_tsv("sst2", tmp_path)


def test_unknown_nli_label_and_missing_files_are_errors_naming_them(tmp_path):
    folder = tmp_path / "RTE"
    folder.mkdir()
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tperhaps\n")
    (folder / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n")
    with pytest.raises(TaskDataError, match=r"RTE/train.tsv:3: malformed row \(KeyError: 'perhaps'\)"):
        load_glue_tsv("rte", tmp_path)
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    assert load_glue_tsv("rte", tmp_path).validation + load_glue_tsv("rte", tmp_path).test == [
        Example("a", "b", 1)]
    (folder / "dev.tsv").unlink()
    with pytest.raises(TaskDataError, match=r"RTE/dev.tsv: file not found .*RTE/train.tsv, RTE/dev.tsv"):
        load_glue_tsv("rte", tmp_path)
    with pytest.raises(TaskDataError, match="tasks.data_dir '.*nowhere' does not exist"):
        load_glue_tsv("rte", tmp_path / "nowhere")
