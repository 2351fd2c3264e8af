"""Loads a backbone and its tokenizer, by hub name, local path, tiny preset or packaged checkpoint.

Which class loads it is its family's answer (``energybench.models.family``),
read from the config, never from the name. Tiny presets are built from a
config with random weights and the file-free ByT5 byte tokenizer, so the
quickstart and the tests never touch the network. Packaged checkpoints
(``minilm-l6``) are real weights installed from the package index.
A hub name that cannot be resolved offline fails with a message that says how
to point at a local copy instead of a stack trace from deep inside the hub
client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from energybench.models.family import all_presets, family_named, family_of_config
from energybench.models.packaged import PACKAGED, checkpoint_dir, missing_reason
from energybench.models.seq2seq import TINY_T5, tiny_t5_config  # noqa: F401 - re-exported

# The seq2seq tiny presets (T5Config keyword arguments); every family's presets: all_presets().
TINY_PRESETS: dict[str, dict] = TINY_T5


class BackboneUnavailableError(RuntimeError):
    """A named backbone can be neither found locally nor downloaded."""


@dataclass
class Backbone:
    model: nn.Module
    tokenizer: object
    name: str
    family: str = "seq2seq"


def byte_tokenizer():
    """ByT5's tokenizer: bytes as tokens, no vocabulary file to download."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def load_backbone(name: str, path: str | None = None, seed: int = 0, config_overrides: dict | None = None,
                  num_labels: int | None = None) -> Backbone:
    """Build or load ``name``.

    A tiny preset is built with ``seed`` so that two runs with the same seed
    start from the same random weights. A local ``path`` wins over the hub.
    ``num_labels`` sizes a classification head (encoder family; 1 = regression).
    """
    presets = all_presets()
    if name in presets and path is None:
        preset = presets[name]
        fam = family_named(preset.family)
        tok = byte_tokenizer()
        model = fam.build_preset(preset, tok, seed, num_labels, config_overrides)
        return Backbone(model=model, tokenizer=tok, name=name, family=fam.name)
    if name in PACKAGED and path is None:
        try:
            folder = checkpoint_dir(name)
        except RuntimeError as exc:
            raise BackboneUnavailableError(str(exc)) from exc
        return _load_pretrained(name, str(folder), num_labels)
    return _load_pretrained(name, path, num_labels)


def _load_pretrained(name: str, path: str | None, num_labels: int | None = None) -> Backbone:
    from transformers import AutoConfig

    source = path or name
    if path is not None and not Path(path).exists():
        raise BackboneUnavailableError(
            f"backbone.path {path!r} does not exist — point it at a folder saved with save_pretrained()"
        )
    try:
        fam = family_of_config(AutoConfig.from_pretrained(source))
        model, tok = fam.load_pretrained(source, num_labels)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "model family" in str(exc):
            raise BackboneUnavailableError(f"backbone {name!r}: {exc}") from exc
        raise BackboneUnavailableError(backbone_missing_message(name)) from exc
    return Backbone(model=model, tokenizer=tok, name=name, family=fam.name)


def backbone_missing_message(name: str) -> str:
    return (
        f"backbone {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download it once on a "
        f"connected machine (`huggingface-cli download {name}`) or save it with save_pretrained() "
        f"and set `backbone.path: /path/to/{name}` in the suite."
    )


def check_backbone_available(name: str, path: str | None) -> str | None:
    """A reason the backbone cannot be loaded, or None; cheap (no weights read)."""
    if name in all_presets() and path is None:
        return None
    if name in PACKAGED and path is None:
        return missing_reason(name)
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


def backbone_family(name: str, path: str | None) -> str | None:
    """The family of a backbone, known without loading weights; None when its config cannot be read here."""
    presets = all_presets()
    if name in presets and path is None:
        return presets[name].family
    if name in PACKAGED and path is None:
        return PACKAGED[name].family
    try:
        from transformers import AutoConfig

        from energybench.models.hub import hub_reachable

        local_only = path is not None or not hub_reachable()
        return family_of_config(AutoConfig.from_pretrained(path or name, local_files_only=local_only)).name
    except Exception:  # noqa: BLE001 - unreadable config: availability checks report it
        return None
