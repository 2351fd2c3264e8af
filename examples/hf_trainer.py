"""Measure a Hugging Face Trainer with energybench's callback (offline: a tiny BERT from a config, random data).

    python examples/hf_trainer.py [--output-dir runs/hf-trainer-example] [--steps 8]
    energybench report runs/hf-trainer-example

Windows: ``train`` (the Trainer's training, its periodic evaluations included), ``eval`` (trainer.evaluate)
and ``predict`` (trainer.predict). ``cb.attach(trainer)`` makes the eval/predict windows cover the whole call
and lets reporters (TensorBoard, W&B, MLflow) log the energybench/* keys. Under torchrun every rank writes its
own row, measuring only its own GPU.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from energybench.integrations.transformers import EnergybenchCallback


class RandomTokens(torch.utils.data.Dataset):
    """Random token ids with a label that depends on them (so the loss can fall)."""

    def __init__(self, n: int, seq: int = 16, vocab: int = 100, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, seq), generator=g)
        self.labels = (self.ids[:, 0] > vocab // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="runs/hf-trainer-example")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(cfg)
    train, val = RandomTokens(64), RandomTokens(16, seed=1)
    first = torch.utils.data.default_collate([train[i] for i in range(8)])
    with tempfile.TemporaryDirectory() as scratch:
        targs = TrainingArguments(output_dir=scratch, max_steps=args.steps, per_device_train_batch_size=8,
                                  per_device_eval_batch_size=8, logging_steps=max(1, args.steps // 2),
                                  learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True,
                                  disable_tqdm=True, seed=0)
        cb = EnergybenchCallback(output_dir=args.output_dir, label="tiny-bert-full-ft", batch=first)
        trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=val, callbacks=[cb])
        cb.attach(trainer)
        out = trainer.train()
        metrics = trainer.evaluate()
        trainer.predict(RandomTokens(8, seed=2))
        cb.close()
    row = cb.row
    print(f"train_runtime {out.metrics['train_runtime']:.3f} s; eval_loss {metrics['eval_loss']:.4f}")
    print(f"row written to {cb.tracker.results_path} (status {row.status}; windows {', '.join(row.windows)}; "
          f"train {row.windows['train']['wall_s']:.3f} s); see it with: energybench report {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
