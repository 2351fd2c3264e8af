"""The ``seq2seq`` family: encoder–decoders (T5, BART) trained text-to-text, scored by rank classification.

Loads as ``AutoModelForSeq2SeqLM``; a task's label is a target string, the
loss is the LM's token cross-entropy, and a task is scored by the
log-likelihood of each candidate label string (``energybench.train.evaluate``).
Tiny presets are T5 configs with random weights and the ByT5 byte vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from energybench.models.family import Family, Preset

# name -> T5Config keyword arguments (random weights, ByT5 vocabulary of 384).
TINY_T5: dict[str, dict] = {
    "tiny-t5": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4),
    "tiny-t5-4layer": dict(d_model=64, d_ff=128, d_kv=16, num_layers=4, num_decoder_layers=4, num_heads=4),
    # Same shapes as the public checkpoints, random weights (for benchmarks).
    "t5-small-random": dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8),
    "t5-base-random": dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12),
}


def tiny_t5_config(preset: str, vocab_size: int = 384, **overrides):
    from transformers import T5Config

    kwargs = dict(dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                  feed_forward_proj="relu", tie_word_embeddings=False)
    kwargs.update(TINY_T5[preset])
    kwargs.update(overrides)  # e.g. dropout_rate, attn_implementation
    return T5Config(vocab_size=vocab_size, **kwargs)


class Seq2SeqFamily(Family):
    name = "seq2seq"
    scoring = "rank"
    presets = {n: Preset(n, "seq2seq", kw) for n, kw in TINY_T5.items()}
    auto_model = "AutoModelForSeq2SeqLM"

    def preset_config(self, preset: Preset, vocab_size: int, num_labels: int | None):
        return tiny_t5_config(preset.name, vocab_size=vocab_size)

    def matches(self, config) -> bool:
        return bool(getattr(config, "is_encoder_decoder", False))

    def build_preset(self, preset: Preset, tokenizer, seed: int, num_labels: int | None,
                     config_overrides: dict | None = None) -> nn.Module:
        from transformers import T5ForConditionalGeneration

        cfg = tiny_t5_config(preset.name, **{"vocab_size": len(tokenizer), **(config_overrides or {})})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return T5ForConditionalGeneration(cfg)

    def load_pretrained(self, source: str, num_labels: int | None):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        return AutoModelForSeq2SeqLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)


FAMILY = Seq2SeqFamily()
