"""The plugin contract every fine-tuning method follows.

A method is a class with a pydantic ``Settings`` model (its hyper-parameters,
unknown keys rejected) and up to six hooks. Only ``apply`` is required; the
training loop calls the others when the method overrides them, so a method
without a regularizer costs nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn


class MethodSettings(BaseModel):
    """Base for a method's hyper-parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ApplyContext:
    """What a method may need to know about the run when it attaches.

    total_steps is the number of optimizer steps the loop will take at most
    (AdaLoRA's and dynamic-rank DoRA's schedules are defined over it).
    """

    total_steps: int
    seed: int
    task_name: str = ""


class Method:
    """Base class of a fine-tuning method plugin.

    Subclasses set ``name``, ``summary`` (one line for ``energybench methods``)
    and ``Settings``, and implement ``apply``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    implemented_by: ClassVar[str] = "energybench"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    #: model families (``energybench.models.family``) the method is defined on; None: every family
    families: ClassVar[tuple[str, ...] | None] = None
    #: why the method is not defined on a family it leaves out (family -> reason), for the suite's error
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: MethodSettings | None = None):
        self.settings = settings if settings is not None else self.Settings()

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        """Freeze what the method freezes, add what it adds; return what trains."""
        raise NotImplementedError

    def on_step_end(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step, before gradients are cleared."""

    def checkpoint_allowed(self, model: nn.Module, step: int, total_steps: int) -> bool:
        """Whether the state after optimizer step ``step`` may become the loop's best validation checkpoint.

        The loop restores the best validation weights at the end. A method whose budget changes during
        training (AdaLoRA's ranks, dynamic-rank DoRA's live components) answers False until the budget is
        final, so the model evaluated, measured and described after training always has the final budget.
        Evaluations it refuses are still logged but neither become "best" nor count towards patience.
        """
        return True

    def regularizer(self, model: nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss, or None."""
        return None

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The module users would deploy (merged where the method allows it)."""
        return model

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Method-specific facts for the result row (e.g. final rank pattern)."""
        return {}

    @classmethod
    def unsupported_reason(cls, family: str) -> str | None:
        """Why this method cannot be defined on ``family``, or None when it can (checked before any run)."""
        if cls.families is None or family in cls.families:
            return None
        why = cls.unsupported.get(family, f"it is defined on {', '.join(cls.families)} backbones only")
        return f"method {cls.name!r} is not defined on the {family!r} model family: {why}"

    @classmethod
    def overrides(cls, name: str) -> bool:
        """Whether this method defines its own version of hook ``name``."""
        return getattr(cls, name) is not getattr(Method, name)


def freeze(model: nn.Module) -> None:
    """Turn off gradients for every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


def train_task_head(model: nn.Module) -> list[str]:
    """Unfreeze the backbone's new task head (the encoder family's classifier); the names it trained.

    Every method trains the head a classification backbone gets for the task
    (it starts random); an LM-head family (seq2seq) has none and this is a no-op.
    """
    from energybench.models.family import family_of

    fam = family_of(model)
    names = fam.head_modules(model)
    for name in names:
        for p in _unwrap(model).get_submodule(name).parameters():
            p.requires_grad_(True)
    return names


def _unwrap(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_encoder(model: nn.Module) -> bool:
    """Whether ``model`` (or the backbone it wraps) is of the encoder family."""
    from energybench.models.family import family_of

    return family_of(model).name == "encoder"


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each storage counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def peft_family_kwargs(model: nn.Module, settings: MethodSettings, default: str = "lora") -> dict[str, Any]:
    """peft config arguments that depend on the backbone's family: targets, task type, the trained head.

    seq2seq (T5): the settings' ``target_modules``, unchanged. encoder: peft's
    ``task_type="SEQ_CLS"`` with the new head in ``modules_to_save`` (it
    trains and is merged back by ``merge_and_unload``); targets as set in
    the suite, else the family's default: peft's own LoRA mapping
    (``default="lora"``: BERT's query, value) or every weight matrix of a
    layer (``default="all"``: Wq, Wk, Wv, Wo, Wf1, Wf2, as AdaLoRA applies it).
    """
    from energybench.models.family import family_of

    targets = list(settings.target_modules)
    fam = family_of(model)
    if fam.name == "causal":
        return causal_peft_kwargs(model, settings)
    if fam.name != "encoder":
        return {"target_modules": targets}
    from energybench.models import encoder

    if "target_modules" not in settings.model_fields_set:
        targets = fam.lora_targets(model) if default == "lora" else encoder.matrix_targets(model)
    return {"target_modules": targets, "task_type": fam.peft_task_type(), "modules_to_save": fam.head_modules(model)}


def causal_peft_kwargs(model: nn.Module, settings: MethodSettings) -> dict[str, Any]:
    """peft arguments on a decoder-only LM: ``task_type="CAUSAL_LM"`` and its targets.

    Targets as set in the suite; else peft's own default for the architecture
    (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: Llama, Qwen,
    Mistral q_proj, v_proj; GPT-2 the fused c_attn; Phi q_proj, v_proj, fc1,
    fc2). ``target_modules: [all-linear]`` (or the string) is peft's
    ``"all-linear"``: every linear layer but the LM head.
    """
    from energybench.models.family import family_of

    fam = family_of(model)
    targets = list(settings.target_modules)
    if "target_modules" not in settings.model_fields_set:
        targets = fam.lora_targets(model)
    return {"target_modules": "all-linear" if targets == ["all-linear"] else targets,
            "task_type": fam.peft_task_type()}
