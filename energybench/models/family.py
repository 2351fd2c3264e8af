"""Model families: what differs between architectures, chosen from a backbone's config, never its name.

A family answers, for every backbone of its kind: how it loads (by hub name,
local folder or tiny preset), what a task's training batch holds and how its
loss is formed, how a task is scored, and which modules the methods target
by default (peft's own per-architecture mapping). Methods and the training
loop ask :func:`family_of` instead of testing for T5 or BERT classes, so a
new family (decoder-only ``causal`` next) is one new module listed in
``_FAMILY_MODULES``.

Detection reads the config the way transformers' Auto classes do:
``seq2seq`` is ``config.is_encoder_decoder``; ``encoder`` is an
architecture transformers can load as a masked LM (BERT, RoBERTa,
DeBERTa-v2/v3, ELECTRA, MiniLM) that is not an encoder–decoder; ``causal``
is any other architecture transformers can load as a causal LM (Llama,
Qwen, Mistral, Phi, GPT-2). Order matters: BERT can load as a causal LM
too, and the encoder family claims it first.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from torch import nn

# One module per family; each defines FAMILY, a Family instance.
_FAMILY_MODULES = ("energybench.models.seq2seq", "energybench.models.encoder", "energybench.models.causal")


class UnknownFamilyError(ValueError):
    """A config that no family claims."""


@dataclass(frozen=True)
class Preset:
    """A backbone built from a config with random weights (``tiny-…``) or a packaged checkpoint."""

    name: str
    family: str
    kwargs: dict
    byte_tokenizer: bool = True  # the file-free ByT5 tokenizer (labels as text need one token per byte)


class Family:
    """What one family of architectures does its own way. Subclasses fill every hook."""

    name: ClassVar[str] = ""
    #: how tasks are scored: "rank" (log-likelihood of label strings) or "head" (a classification head)
    scoring: ClassVar[str] = ""
    presets: ClassVar[dict[str, Preset]] = {}
    #: the transformers Auto class this family loads as (``energybench estimate`` builds from a config with it)
    auto_model: ClassVar[str] = ""

    def matches(self, config) -> bool:
        raise NotImplementedError

    def preset_config(self, preset: Preset, vocab_size: int, num_labels: int | None):
        """The transformers config of ``preset`` (a shape-only preset keeps its own vocabulary)."""
        raise NotImplementedError

    def build_preset(self, preset: Preset, tokenizer, seed: int, num_labels: int | None,
                     config_overrides: dict | None = None) -> nn.Module:
        """Random-weight model of ``preset`` (seeded), sized for ``tokenizer``'s vocabulary."""
        raise NotImplementedError

    def load_pretrained(self, source: str, num_labels: int | None):
        """(model, tokenizer) from a hub name or a save_pretrained() folder."""
        raise NotImplementedError

    def lora_targets(self, model: nn.Module) -> list[str]:
        """peft's default LoRA targets for this architecture (its TRANSFORMERS_MODELS_TO_LORA_… mapping)."""
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as mapping

        model_type = model.config.model_type
        if model_type not in mapping:
            raise ValueError(f"peft has no default LoRA targets for model_type {model_type!r}; "
                             f"set target_modules in the suite")
        return list(mapping[model_type])

    def head_modules(self, model: nn.Module) -> list[str]:
        """Names of the task-head modules that train with every method (none for LM-head families)."""
        return []

    def peft_task_type(self) -> str | None:
        """peft's task_type for this family (routes forward through the task-aware PeftModel)."""
        return None


@lru_cache(maxsize=None)
def families() -> tuple[Family, ...]:
    return tuple(importlib.import_module(m).FAMILY for m in _FAMILY_MODULES)


def family_named(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise UnknownFamilyError(f"no model family {name!r}; known: {', '.join(f.name for f in families())}")


def family_of_config(config) -> Family:
    """The family that claims ``config`` (a transformers PretrainedConfig)."""
    for fam in families():
        if fam.matches(config):
            return fam
    raise UnknownFamilyError(
        f"no model family supports model_type {getattr(config, 'model_type', '?')!r} "
        f"(known: {', '.join(f.name for f in families())}): energybench loads encoder–decoders (seq2seq), "
        f"masked-LM encoders (encoder) and decoder-only causal LMs (causal)")


def family_of(model: nn.Module) -> Family:
    """The family of a backbone or of anything wrapping one (peft models and side networks keep ``.config``)."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnknownFamilyError(f"{type(model).__name__} has no .config to tell its model family from")
    return family_of_config(config)


def all_presets() -> dict[str, Preset]:
    out: dict[str, Preset] = {}
    for fam in families():
        out.update(fam.presets)
    return out
