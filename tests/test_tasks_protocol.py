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
from energybench.tasks.glue import load_glue_hub, load_glue_tsv
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


def test_hub_small_task_is_halved_like_the_tsv_reader(monkeypatch):
    fake = {"train": [{"sentence": f"t{i}", "label": i % 2} for i in range(20)],
            "validation": [{"sentence": f"v{i}", "label": i % 2} for i in range(9)]}
    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=lambda name, task: fake))
    data = load_glue_hub("sst2")
    assert len(data.train) == 20 and (len(data.validation), len(data.test)) == (4, 5)
    assert {e.text_a for e in data.validation + data.test} == {f"v{i}" for i in range(9)}


def test_mismatched_split_and_seed_are_keyword_only():
    """A third positional list must not silently become MNLI's mismatched validation."""
    with pytest.raises(TypeError):
        read_protocol_split([1], [2], [3])  # type: ignore[misc]
    assert read_protocol_split([1], [2, 3], seed=1)[0] == [1]
