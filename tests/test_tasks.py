"""READ's split protocol, GLUE TSV reading, metrics and rank classification."""

from __future__ import annotations

import pytest
import torch

from energybench.tasks.base import Example
from energybench.tasks.glue import TaskDataError, load_glue_tsv
from energybench.tasks.metrics import compute_metrics
from energybench.tasks.splits import read_protocol_split
from energybench.tasks.synthetic import make_synthetic


def _write_sst2(folder, n_train, n_dev):
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"train {i}\t{i % 2}\n" for i in range(n_train)))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"dev {i}\t{i % 2}\n" for i in range(n_dev)))


def test_small_train_halves_original_validation_into_validation_and_test(tmp_path):
    _write_sst2(tmp_path / "SST-2", 50, 11)
    data = load_glue_tsv("sst2", tmp_path)
    assert len(data.train) == 50
    assert (len(data.validation), len(data.test)) == (5, 6)
    dev = {f"dev {i}" for i in range(11)}
    assert {e.text_a for e in data.validation} | {e.text_a for e in data.test} == dev
    assert not {e.text_a for e in data.validation} & {e.text_a for e in data.test}


def test_large_train_uses_validation_as_test_and_1k_train_examples_as_validation():
    train = list(range(12_000))
    dev = list(range(100_000, 100_500))
    tr, va, te = read_protocol_split(train, dev)
    assert te == dev
    assert len(va) == 1000 and len(tr) == 11_000
    assert set(va).isdisjoint(tr) and set(va) | set(tr) == set(train)


def test_mnli_uses_mismatched_for_validation_and_matched_for_test():
    tr, va, te = read_protocol_split([1, 2], ["m1", "m2"], validation_mismatched=["mm1"])
    assert (tr, va, te) == ([1, 2], ["mm1"], ["m1", "m2"])


def test_split_is_the_same_for_every_call():
    assert read_protocol_split([0], list(range(20))) == read_protocol_split([0], list(range(20)))


def test_malformed_tsv_row_names_file_and_line(tmp_path):
    folder = tmp_path / "SST-2"
    _write_sst2(folder, 3, 4)
    (folder / "train.tsv").write_text("sentence\tlabel\nok\t1\nbroken row without label\n")
    with pytest.raises(TaskDataError, match=r"SST-2/train.tsv:3: malformed row"):
        load_glue_tsv("sst2", tmp_path)


def test_cola_tsv_without_header_reads_by_position(tmp_path):
    folder = tmp_path / "CoLA"
    folder.mkdir()
    rows = "".join(f"src\t{i % 2}\t\tsentence {i}\n" for i in range(8))
    (folder / "train.tsv").write_text(rows)
    (folder / "dev.tsv").write_text(rows)
    data = load_glue_tsv("cola", tmp_path)
    assert data.train[1] == Example("sentence 1", None, 1)


def test_real_sst2_sample_in_shared_data_loads_when_present():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not (root / "SST-2" / "train.tsv").exists():
        pytest.skip("../shared/data/glue not beside this checkout")
    data = load_glue_tsv("sst2", root)
    assert len(data.validation) == 1000  # large task: 1k train examples become validation
    assert all(e.label in (0, 1) for e in data.test)


def test_metrics_match_independent_formulas():
    score, m = compute_metrics("f1_accuracy", [1, 1, 0, 0], [1, 0, 0, 0])
    # acc = 3/4; precision 1/2, recall 1 → F1 = 2/3
    assert m["accuracy"] == pytest.approx(75.0) and m["f1"] == pytest.approx(200 / 3)
    assert score == pytest.approx((75.0 + 200 / 3) / 2)
    score, _ = compute_metrics("matthews", [1, 0, 1, 0], [1, 0, 1, 0])
    assert score == pytest.approx(100.0)
    score, m = compute_metrics("pearson_spearman", [1.0, 2.0, 3.0], [2.0, 4.0, 6.5])
    assert m["spearman"] == pytest.approx(100.0)


def test_synthetic_tasks_are_deterministic_and_balanced():
    a, b = make_synthetic("synth-pair", seed=3), make_synthetic("synth-pair", seed=3)
    assert a.train == b.train and a.test == b.test
    share = sum(e.label for e in a.train) / len(a.train)
    assert 0.4 < share < 0.6


class _ScriptedModel(torch.nn.Module):
    """Returns logits that make one fixed target string likeliest, whatever the input."""

    def __init__(self, favourite: torch.Tensor, vocab: int):
        super().__init__()
        self.favourite, self.vocab = favourite, vocab

    def forward(self, input_ids, attention_mask, labels):
        logits = torch.zeros(labels.shape[0], labels.shape[1], self.vocab)
        for pos in range(labels.shape[1]):
            if pos < len(self.favourite):
                logits[:, pos, self.favourite[pos]] = 5.0
        return type("Out", (), {"logits": logits, "loss": None})()


def test_rank_classification_picks_the_likeliest_candidate():
    from energybench.models.backbones import byte_tokenizer
    from energybench.tasks.synthetic import SYNTHETIC_SPECS
    from energybench.train.evaluate import evaluate

    tok = byte_tokenizer()
    spec = SYNTHETIC_SPECS["synth-sst2"]
    favourite = tok(["positive"])["input_ids"][0]
    model = _ScriptedModel(torch.tensor(favourite), len(tok))
    examples = [Example("x", None, 1), Example("y", None, 1), Example("z", None, 0), Example("w", None, 1)]
    score, metrics = evaluate(model, tok, spec, examples, 32, 8, 2, torch.device("cpu"))
    assert score == pytest.approx(75.0)  # always "positive": 3 of 4 right
