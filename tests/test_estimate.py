"""`energybench estimate`: from configs alone, the same figures a run's accounting gives its real model."""

from __future__ import annotations

import json

import pytest
import torch

from energybench.cli import main
from energybench.measure.accounting import account_inference, account_training_step
from energybench.methods.base import ApplyContext, count_parameters
from energybench.models.backbones import load_backbone
from energybench.registry import load_method
from energybench.run.estimate import (
    CONTEXT,
    FIGURES,
    EstimateError,
    _meta_backbone,
    backbone_config,
    estimate_suite,
    parse_size,
)
from energybench.suite import BackboneEntry, load_suite
from conftest import write_suite

METHODS = ("full_ft", "lora", "read", "lst")
SUITE = """
name: est
output_dir: runs/est
backbones:
  - name: tiny-t5
tasks:
  - name: synth-sst2
methods:
""" + "".join(f"  - name: {m}\n" for m in METHODS) + """
training:
  batch_size: 6
  max_source_length: 20
  max_target_length: 3
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    path = write_suite(tmp_path_factory.mktemp("est"), SUITE)
    return estimate_suite(load_suite(path), gpu_memory=parse_size("8MiB"), progress=lambda _m: None, jobs=2)


def _real_model_figures(name: str) -> dict:
    """The run's way: a real tiny-t5 with real weights, the method applied, accounted on the same batch."""
    method = load_method(name)()
    model = method.apply(load_backbone("tiny-t5", seed=0).model, ApplyContext(total_steps=10, seed=0))
    ids = torch.full((6, 20), 5)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full((6, 3), 6)}
    cost = account_training_step(model, lambda m, b: m(**b).loss, batch, lambda p: torch.optim.AdamW(p))
    trainable = count_parameters(model)[0]
    if method.overrides("for_inference"):
        model = method.for_inference(model)
    infer = {k: v[:1] for k, v in batch.items()}
    return {"trainable_params": trainable, **cost.memory.as_fields(), "train_flops": cost.train_flops,
            "infer_flops": account_inference(model, lambda m, b: m(**b), infer)}


@pytest.mark.parametrize("name", METHODS)
def test_estimate_from_the_config_equals_the_real_models_accounting(rows, name):
    row = next(r for r in rows if r["method"] == name)
    expected = _real_model_figures(name)
    assert {k: row[k] for k in expected} == expected
    assert row["fits"] == (row["mem_model_bytes"] <= 8 * 2**20)


def test_json_rows_have_exactly_the_documented_keys(tmp_path, capsys):
    path = write_suite(tmp_path, SUITE.replace("  - name: read\n  - name: lst\n", ""))
    assert main(["estimate", str(path), "--format", "json", "--batch-size", "2", "--gpu-memory", "80GB"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in out] == ["full_ft", "lora"]
    assert all(set(r) == set(FIGURES) | set(CONTEXT) | {"fits"} for r in out)
    assert all(r["batch_size"] == 2 and r["accounting_semantics"] == "cuda" and r["fits"] is True for r in out)


def test_worker_processes_give_the_serial_rows_in_the_suites_order(tmp_path, rows):
    """--jobs only spreads rows over processes: the same figures, in the suite's order, as one process."""
    suite = load_suite(write_suite(tmp_path, SUITE))
    serial = estimate_suite(suite, gpu_memory=parse_size("8MiB"), progress=lambda _m: None, jobs=1)
    assert [r["method"] for r in serial] == list(METHODS)
    assert serial == rows  # the module fixture ran in two worker processes


@pytest.mark.parametrize("flag,value", [("--jobs", "0"), ("--batch-size", "0"), ("--source-length", "0"),
                                        ("--target-length", "0"), ("--source-length", "-3")])
def test_a_size_below_one_is_exit_2_naming_the_flag(tmp_path, capsys, flag, value):
    assert main(["estimate", str(write_suite(tmp_path, SUITE)), flag, value]) == 2
    assert f"{flag} {value}: must be at least 1" in capsys.readouterr().err


def test_bad_gpu_memory_is_exit_2(tmp_path, capsys):
    path = write_suite(tmp_path, SUITE)
    assert main(["estimate", str(path), "--gpu-memory", "eighty"]) == 2
    assert "--gpu-memory" in capsys.readouterr().err


def test_sizes_parse_si_and_binary_units():
    assert parse_size("80GB") == 80 * 10**9
    assert parse_size("80GiB") == parse_size("80G") == 80 * 2**30
    assert parse_size("81920MiB") == 80 * 2**30
    assert parse_size("1024") == 1024
    with pytest.raises(EstimateError):
        parse_size("80 parsecs")


def test_the_backbone_is_built_without_allocating_weights():
    model = _meta_backbone(backbone_config(BackboneEntry(name="t5-base-random")), torch.float32, False)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 198_524_160  # t5-base shapes, untied head, 384 byte tokens


def test_a_worker_that_dies_is_a_named_error_not_a_hang(tmp_path, monkeypatch):
    """A worker killed mid-row (the kernel's OOM killer, say) must end estimate with a clear error."""
    import os

    from energybench.run import estimate

    real_row = estimate._Task.row

    def dies_on_lora(self):
        if self.method.name == "lora":
            os._exit(9)
        return real_row(self)

    monkeypatch.setattr(estimate._Task, "row", dies_on_lora)
    with pytest.raises(EstimateError, match="worker process died"):
        estimate_suite(load_suite(write_suite(tmp_path, SUITE)), progress=lambda _m: None, jobs=2)
