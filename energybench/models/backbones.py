"""Loads a seq2seq backbone and its tokenizer, by hub name, local path or tiny preset.

Tiny presets are built from a config with random weights and the file-free
ByT5 byte tokenizer, so the quickstart and the tests never touch the network.
A hub name that cannot be resolved offline fails with a message that says how
to point at a local copy instead of a stack trace from deep inside the hub
client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# name -> T5Config keyword arguments (random weights, ByT5 vocabulary of 384).
TINY_PRESETS: dict[str, dict] = {
    "tiny-t5": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4),
    "tiny-t5-4layer": dict(d_model=64, d_ff=128, d_kv=16, num_layers=4, num_decoder_layers=4, num_heads=4),
    # Same shapes as the public checkpoints, random weights (for benchmarks).
    "t5-small-random": dict(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8),
    "t5-base-random": dict(d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12, num_heads=12),
}


class BackboneUnavailableError(RuntimeError):
    """A named backbone can be neither found locally nor downloaded."""


@dataclass
class Backbone:
    model: nn.Module
    tokenizer: object
    name: str


def tiny_t5_config(preset: str, vocab_size: int = 384, **overrides):
    from transformers import T5Config

    kwargs = dict(dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                  feed_forward_proj="relu", tie_word_embeddings=False)
    kwargs.update(TINY_PRESETS[preset])
    kwargs.update(overrides)  # e.g. dropout_rate, attn_implementation
    return T5Config(vocab_size=vocab_size, **kwargs)


def byte_tokenizer():
    """ByT5's tokenizer: bytes as tokens, no vocabulary file to download."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def load_backbone(name: str, path: str | None = None, seed: int = 0, config_overrides: dict | None = None) -> Backbone:
    """Build or load ``name``.

    A tiny preset is built with ``seed`` so that two runs with the same seed
    start from the same random weights. A local ``path`` wins over the hub.
    """
    if name in TINY_PRESETS and path is None:
        from transformers import T5ForConditionalGeneration

        tok = byte_tokenizer()
        cfg = tiny_t5_config(name, **{"vocab_size": len(tok), **(config_overrides or {})})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5ForConditionalGeneration(cfg)
        return Backbone(model=model, tokenizer=tok, name=name)
    return _load_pretrained(name, path)


def _load_pretrained(name: str, path: str | None) -> Backbone:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    source = path or name
    if path is not None and not Path(path).exists():
        raise BackboneUnavailableError(
            f"backbone.path {path!r} does not exist — point it at a folder saved with save_pretrained()"
        )
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSeq2SeqLM.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise BackboneUnavailableError(backbone_missing_message(name)) from exc
    return Backbone(model=model, tokenizer=tok, name=name)


def backbone_missing_message(name: str) -> str:
    return (
        f"backbone {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it once on a "
        f"connected machine (`huggingface-cli download {name}`) or save it with save_pretrained() "
        f"and set `backbone.path: /path/to/{name}` in the suite."
    )


def check_backbone_available(name: str, path: str | None) -> str | None:
    """A reason the backbone cannot be loaded, or None; cheap (no weights read)."""
    if name in TINY_PRESETS and path is None:
        return None
    if path is not None:
        p = Path(path)
        if not p.exists():
            return f"backbone.path {path!r} does not exist — point it at a folder saved with save_pretrained()"
        if not (p / "config.json").exists():
            return f"backbone.path {path!r} has no config.json — expected a folder saved with save_pretrained()"
        if not any(p.glob("*.safetensors")):
            return (f"backbone.path {path!r} has a config.json but no weights (*.safetensors) — save the model "
                    "with save_pretrained(safe_serialization=True)")
        return None
    from energybench.models.hub import hub_reachable, model_cached

    if model_cached(name) or hub_reachable():
        return None
    return backbone_missing_message(name)
