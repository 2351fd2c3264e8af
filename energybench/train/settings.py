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
    """The training loop's settings; a method entry may override any of them."""

    model_config = _STRICT
    learning_rate: PositiveFloat = 3e-4
    batch_size: PositiveInt = 32
    max_epochs: PositiveInt = 30
    max_steps: PositiveInt | None = Field(None, description="cap on optimizer steps (None: max_epochs decides)")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: PositiveFloat | None = 1.0
    patience: PositiveInt | None = Field(3, description="evaluations without improvement before stopping")
    eval_every_steps: PositiveInt | None = Field(None, description="None: evaluate at the end of each epoch")
    max_source_length: PositiveInt = 128
    max_target_length: PositiveInt = 16
    eval_batch_size: PositiveInt = 64
    max_train_examples: PositiveInt | None = None
    max_eval_examples: PositiveInt | None = Field(None, description="cap on validation/test examples (quick runs)")
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"] = Field(
        "fp32", description="fp32; autocast with fp32 master weights (bf16-mixed, fp16-mixed + GradScaler); "
                            "bf16: backbone cast to bfloat16 (train/precision.py)")
    gradient_checkpointing: bool = Field(False, description="the backbone's own gradient_checkpointing_enable")


class TrainingOverrides(BaseModel):
    model_config = _STRICT
    learning_rate: PositiveFloat | None = None
    batch_size: PositiveInt | None = None
    max_epochs: PositiveInt | None = None
    max_steps: PositiveInt | None = None
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: NonNegativeFloat | None = None
    grad_clip: PositiveFloat | None = None
    patience: PositiveInt | None = None
    eval_every_steps: PositiveInt | None = None
    precision: Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"] | None = None
    gradient_checkpointing: bool | None = None
