"""Model families: chosen from the config, never the name; each owns loading, batches, scoring and targets."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from energybench.models.backbones import BackboneUnavailableError, load_backbone
from energybench.models.family import UnknownFamilyError, family_of, family_of_config
from energybench.tasks.base import Example, TaskData, TaskSpec


def test_family_comes_from_the_config_not_the_name():
    from transformers import BertConfig, DebertaV2Config, ElectraConfig, GPT2Config, RobertaConfig, T5Config, ViTConfig

    assert family_of_config(T5Config()).name == "seq2seq"
    for cfg in (BertConfig(), RobertaConfig(), DebertaV2Config(), ElectraConfig()):
        assert family_of_config(cfg).name == "encoder", cfg.model_type
    cfg = BertConfig()
    cfg.name_or_path = "t5-base"  # the name says T5, the config says BERT
    assert family_of_config(cfg).name == "encoder"
    assert family_of_config(GPT2Config()).name == "causal"
    with pytest.raises(UnknownFamilyError, match="vit"):  # an image model: no family claims it
        family_of_config(ViTConfig())


def test_tiny_bert_is_a_seeded_random_classifier_with_the_byte_tokenizer():
    a, b = load_backbone("tiny-bert", seed=3, num_labels=3), load_backbone("tiny-bert", seed=3, num_labels=3)
    assert a.family == "encoder" and type(a.model).__name__ == "BertForSequenceClassification"
    assert a.model.config.num_labels == 3 and a.model.config.vocab_size == len(a.tokenizer) == 384
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert load_backbone("tiny-t5").family == "seq2seq"


def test_encoder_head_modules_and_six_matrix_targets_are_read_from_the_model():
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from energybench.models import encoder

    bert = load_backbone("tiny-bert").model
    assert family_of(bert).head_modules(bert) == ["classifier"]
    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        pooler_hidden_size=32, relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True))
    assert family_of(deberta).head_modules(deberta) == ["pooler", "classifier"]
    assert [t.rsplit(".", 1)[-1] for t in encoder.matrix_targets(deberta)] == [
        "query_proj", "key_proj", "value_proj", "dense", "dense", "dense"]
    assert family_of(deberta).lora_targets(deberta) == ["query_proj", "value_proj"]  # peft's mapping


SPEC = TaskSpec("toy", "toy:", "sentence", None, ("no", "yes"), "accuracy")
REG = TaskSpec("toyreg", "toyreg:", "sentence1", "sentence2", None, "pearson_spearman")


def test_head_batches_pad_per_batch_and_carry_class_ids_or_floats():
    from energybench.train.batches import training_batch

    tok = load_backbone("tiny-bert").tokenizer
    ex = [Example("ab", None, 1), Example("abcdef", None, 0)]
    batch = training_batch(tok, SPEC, ex, 64, 16, family="encoder")
    assert batch["input_ids"].shape == (2, 7)  # 6 bytes + EOS, padded to the longest row
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    reg = training_batch(tok, REG, [Example("a", "b", 2.4)], 64, 16, family="encoder")
    assert reg["labels"].dtype == torch.float32 and reg["labels"].tolist() == [pytest.approx(2.4)]
    assert reg["input_ids"].shape == (1, 4)  # a EOS b EOS


def test_encoder_tasks_are_scored_by_the_heads_argmax():
    from energybench.train.evaluate import evaluate

    bb = load_backbone("tiny-bert")
    with torch.no_grad():
        bb.model.classifier.weight.zero_()
        bb.model.classifier.bias.copy_(torch.tensor([0.0, 1.0]))  # always predicts class 1
    ex = [Example(f"s{i}", None, int(i % 4 == 0)) for i in range(20)]
    score, _ = evaluate(bb.model, bb.tokenizer, SPEC, ex, 64, 16, 8, torch.device("cpu"), family="encoder")
    assert score == pytest.approx(100 * 5 / 20)  # 5 of 20 labels are 1


def test_regression_tasks_are_scored_by_the_single_output():
    bb = load_backbone("tiny-bert", num_labels=1)
    with torch.no_grad():
        bb.model.classifier.weight.zero_()
        bb.model.classifier.bias.fill_(2.5)
    ex = [Example("a", "b", float(i)) for i in range(5)]
    from energybench.train.evaluate import head_predictions

    assert head_predictions(bb.model, bb.tokenizer, REG, ex, 64, 8, torch.device("cpu")) == [pytest.approx(2.5)] * 5


def test_packaged_checkpoint_without_its_extra_fails_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "all_minilm_l6_v2" else real(n, *a))
    with pytest.raises(BackboneUnavailableError, match=r"energybench\[minilm\]"):
        load_backbone("minilm-l6")
    from energybench.models.backbones import check_backbone_available

    assert "energybench[minilm]" in check_backbone_available("minilm-l6", None)


def test_packaged_checkpoint_with_wrong_bytes_is_refused(monkeypatch, tmp_path):
    from pathlib import Path

    from energybench.models import packaged

    def extract_model(out):
        folder = Path(out) / "all-MiniLM-L6-v2"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"not the weights")
        return folder

    fake = types.ModuleType("all_minilm_l6_v2")
    fake.extract_model = extract_model
    monkeypatch.setitem(sys.modules, "all_minilm_l6_v2", fake)
    monkeypatch.setattr(packaged, "missing_reason", lambda name: None)
    monkeypatch.setenv("ENERGYBENCH_CACHE", str(tmp_path))
    with pytest.raises(packaged.PackagedCheckpointError, match="sha256"):
        packaged.checkpoint_dir("minilm-l6")


def test_a_method_undefined_on_a_family_fails_validation_naming_method_and_family(monkeypatch):
    from energybench import suite as suite_mod
    from energybench.methods.base import Method

    class T5Only(Method):
        name = "t5only"
        families = ("seq2seq",)
        unsupported = {"encoder": "it reads the decoder's cross-attention"}

        def apply(self, model, ctx):
            return model

    real = suite_mod.load_method
    monkeypatch.setattr(suite_mod, "load_method", lambda n: T5Only if n == "t5only" else real(n))
    text = """
name: s
output_dir: runs/s
backbones: [{name: tiny-t5}, {name: tiny-bert}]
tasks: [{name: synth-sst2}]
methods:
  - name: full_ft
  - name: t5only
"""
    with pytest.raises(suite_mod.SuiteError) as exc:
        suite_mod.parse_suite(text, "s.yaml")
    (problem,) = exc.value.problems
    assert problem.startswith("s.yaml:8 methods[1].name")
    assert "'t5only'" in problem and "'encoder'" in problem and "cross-attention" in problem and "tiny-bert" in problem


@pytest.mark.parametrize("name", ["sst2_minilm", "glue_deberta", "quickstart_encoder"])
def test_shipped_encoder_suites_validate_with_every_method(name):
    from pathlib import Path

    from energybench.registry import method_names
    from energybench.suite import load_suite, with_data_dir

    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / f"{name}.yaml")
    assert {m.name for m in suite.methods} == set(method_names())
    moved = with_data_dir(suite, "/data/glue")
    assert all(t.data_dir == ("/data/glue" if not t.name.startswith("synth") else None) for t in moved.tasks)


def test_head_predictions_come_back_in_input_order_whatever_the_batching():
    """Rows are batched by length; each row's prediction is the one it gets alone (batch of one, no padding)."""
    from energybench.train.evaluate import head_predictions

    bb = load_backbone("tiny-bert", num_labels=1, seed=4)
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij klmnop") for _ in range(n)) for n in (9, 1, 30, 4, 17, 2, 25, 6)]
    ex = [Example(w, "xyz" if len(w) % 2 else None, 0.0) for w in words]
    bb.model.eval()
    alone = [head_predictions(bb.model, bb.tokenizer, REG, [e], 64, 1, torch.device("cpu"))[0] for e in ex]
    batched = head_predictions(bb.model, bb.tokenizer, REG, ex, 64, 3, torch.device("cpu"))
    assert len(set(round(a, 6) for a in alone)) == len(ex)  # distinct outputs, so a permutation would show
    assert batched == pytest.approx(alone, abs=1e-7)
