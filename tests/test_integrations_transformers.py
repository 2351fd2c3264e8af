"""The Hugging Face Trainer callback on a tiny model for a few steps, and the two examples, offline on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from energybench.results import read_rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from hf_trainer import RandomTokens  # noqa: E402


def _trainer(tmp_path, cb, steps=4):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=32, num_labels=2))
    args = TrainingArguments(output_dir=str(tmp_path / "scratch"), max_steps=steps, per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, logging_steps=2, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    return model, Trainer(model=model, args=args, train_dataset=RandomTokens(32), eval_dataset=RandomTokens(8, seed=1),
                          callbacks=[cb])


def test_the_callback_writes_a_row_whose_train_window_is_within_the_trainers_runtime(tmp_path):
    from energybench.integrations.transformers import EnergybenchCallback

    cb = EnergybenchCallback(output_dir=tmp_path / "rows", label="tiny-bert", measure={"host_energy": False})
    model, trainer = _trainer(tmp_path, cb)
    out = trainer.train()
    trainer.evaluate()  # not attached: the window opens at the first prediction step
    cb.close()
    cb.close()  # idempotent: still one row
    (row,) = read_rows(tmp_path / "rows")
    assert row["status"] == "ok" and row["suite"] == "hf-trainer" and row["steps"] == 4
    train = row["windows"]["train"]
    assert 0 < train["wall_s"] <= out.metrics["train_runtime"]
    assert "eval" in row["windows"] and row["windows"]["eval"]["wall_s"] > 0
    assert row["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert row["total_params"] == row["trainable_params"]
    t = row["config"]["trainer"]
    assert (t["precision"], t["per_device_train_batch_size"], t["gradient_checkpointing"]) == ("fp32", 4, False)
    assert row["accounting"]["mem_model_bytes"] is None and "batch" in row["accounting"]["reasons"]["mem_model_bytes"]
    logged = [h for h in trainer.state.log_history if "energybench/train_wall_s" in h]
    assert logged and all(h["energybench/train_wall_s"] <= out.metrics["train_runtime"] for h in logged)


def test_attach_puts_the_callback_first_and_windows_whole_evaluate_and_predict_calls(tmp_path):
    from energybench.integrations.transformers import EnergybenchCallback

    cb = EnergybenchCallback(output_dir=tmp_path / "rows", label="tiny-bert", measure={"host_energy": False})
    _, trainer = _trainer(tmp_path, cb, steps=2)
    cb.attach(trainer)
    assert trainer.callback_handler.callbacks[0] is cb
    assert sum(c is cb for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    trainer.evaluate()
    trainer.evaluate()
    trainer.predict(RandomTokens(4, seed=2))
    cb.close()
    (row,) = read_rows(tmp_path / "rows")
    assert list(row["windows"]) == ["train", "eval", "eval_2", "predict"]


def _run(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_both_examples_run_offline_and_their_rows_render(tmp_path):
    for name in ("plain_loop.py", "hf_trainer.py"):
        out = tmp_path / name
        proc = _run(str(ROOT / "examples" / name), "--output-dir", str(out), "--steps", "4", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"row written to {out / 'results.jsonl'}" in proc.stdout
        (row,) = read_rows(out)
        assert row["status"] == "ok"
        assert row["accounting"]["mem_model_bytes"] > row["accounting"]["mem_params_bytes"] > 0  # batch / loss_fn given
        rep = _run("-m", "energybench.cli", "report", str(out), "--format", "md", cwd=tmp_path)
        assert rep.returncode == 0, rep.stderr[-2000:]
        assert row["method"] in (out / "report.md").read_text()
