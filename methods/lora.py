"""LoRA (Hu et al., ICLR 2022), wrapping Hugging Face peft's implementation.

y = W0·x + (α/r)·B·A·dropout(x), B initialised to zero, so the model is the
backbone at initialisation. Defaults are the LoRA paper's for T5 (q and v);
on an encoder, peft's own mapping for its architecture, with the new
classification head trained (``task_type="SEQ_CLS"``, ``modules_to_save``).
``for_inference`` merges the update into the weights, as users deploy it.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, peft_family_kwargs


class LoRASettings(MethodSettings):
    r: PositiveInt = Field(8, description="rank of the update")
    alpha: float = Field(8.0, gt=0, description="scaling numerator: update is scaled by alpha/r")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q", "v"], min_length=1,
        description="modules to adapt; left out: the family's default, peft's mapping (T5: q, v; BERT: query, value)")


class LoRA(Method):
    name = "lora"
    summary = "low-rank update B·A on the targeted projections (peft)"
    paper = "Hu et al., ICLR 2022"
    implemented_by = "peft"
    Settings = LoRASettings

    def peft_config(self, model: nn.Module | None = None):
        from peft import LoraConfig

        s = self.settings
        family = peft_family_kwargs(model, s) if model is not None else {"target_modules": list(s.target_modules)}
        return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, **family)

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    def for_inference(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()
