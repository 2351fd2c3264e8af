"""The training loop's settings (the suite's ``training:`` block) and a method entry's overrides of them.

Owned by the train stage, so the loop does not import the suite schema that embeds them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
)

_STRICT = ConfigDict(extra="forbid", frozen=True)


class TrainingSettings(BaseModel):
    """The training loop's settings; a method entry may override any of them.

    Upper bounds (``le``) refuse absurd values (``max_steps: 1e29``) at validation, not hours into a run."""

    model_config = _STRICT
    learning_rate: PositiveFloat = Field(3e-4, le=10.0)
    batch_size: PositiveInt = Field(32, le=65_536)
    max_epochs: PositiveInt = Field(30, le=100_000)
    max_steps: PositiveInt | None = Field(None, le=100_000_000, description="cap on optimizer steps (None: max_epochs decides)")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: NonNegativeFloat = Field(0.0, le=10.0)
    grad_clip: PositiveFloat | None = Field(1.0, le=1e6)
    patience: PositiveInt | None = Field(3, le=1_000_000, description="evaluations without improvement before stopping")
    eval_every_steps: PositiveInt | None = Field(None, le=100_000_000, description="None: evaluate at the end of each epoch")
    max_source_length: PositiveInt = Field(128, le=65_536)
    max_target_length: PositiveInt = Field(16, le=65_536)
    eval_batch_size: PositiveInt = Field(64, le=65_536)
    max_train_examples: PositiveInt | None = Field(None, le=1_000_000_000)
    max_eval_examples: PositiveInt | None = Field(None, le=1_000_000_000, description="cap on validation/test examples (quick runs)")
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"] = Field(
        "fp32", description="fp32; autocast with fp32 master weights (bf16-mixed, fp16-mixed + GradScaler); "
                            "bf16: backbone cast to bfloat16 (train/precision.py)")
    gradient_checkpointing: bool = Field(False, description="the backbone's own gradient_checkpointing_enable")
    group_by_length: bool = Field(False, description="batches of similar length (transformers' length grouping, "
                                                     "the batches then shuffled): less padding, same examples")


class TrainingOverrides(BaseModel):
    model_config = _STRICT
    learning_rate: PositiveFloat | None = Field(None, le=10.0)
    batch_size: PositiveInt | None = Field(None, le=65_536)
    max_epochs: PositiveInt | None = Field(None, le=100_000)
    max_steps: PositiveInt | None = Field(None, le=100_000_000)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: NonNegativeFloat | None = Field(None, le=10.0)
    grad_clip: PositiveFloat | None = Field(None, le=1e6)
    patience: PositiveInt | None = Field(None, le=1_000_000)
    eval_every_steps: PositiveInt | None = Field(None, le=100_000_000)
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"] | None = None
    gradient_checkpointing: bool | None = None
