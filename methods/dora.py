"""Weight-decomposed DoRA (Liu et al., ICML 2024), wrapping Hugging Face peft (``LoraConfig(use_dora=True)``).

Not to be confused with dynamic-rank DoRA (``dydora``). Each adapted weight W0
(out×in in torch's layout) is split into a magnitude and a direction:

    W′ = m · (W0 + s·B·A) / ‖W0 + s·B·A‖,   s = alpha/r,

the norm taken per output unit (peft: ``torch.linalg.norm(W, dim=1)``, the
paper's column norm ‖·‖_c of its in×out W). m (one entry per output unit) is
initialised to ‖W0‖ and trained with A and B; B starts at 0, so the model is
the backbone at initialisation. The norm is detached from the graph (paper
§4.3), which peft does. Defaults are LoRA's for T5 (r = 8, alpha = 8, q and v);
on an encoder, peft's target mapping and the head trained, as for ``lora``.

Training is slower than LoRA (the norm of the full matrix is recomputed every
forward) and unmerged inference far slower; ``for_inference`` merges W′ into
plain ``nn.Linear`` weights, which is how it is deployed and costs no extra
latency.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, peft_family_kwargs


class DoRASettings(MethodSettings):
    r: PositiveInt = Field(8, description="rank of the low-rank direction update B·A")
    alpha: float = Field(8.0, gt=0, description="scaling numerator: B·A is scaled by alpha/r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input of the low-rank path")
    target_modules: list[str] = Field(default_factory=lambda: ["q", "v"], min_length=1,
                                      description="names of the nn.Linear modules to adapt (T5: q, v as in LoRA); "
                                                  "left out on an encoder: peft's mapping (BERT: query, value)")


class DoRA(Method):
    name = "dora"
    summary = "weight-decomposed low-rank adaptation: trained magnitude m and LoRA-updated direction (peft)"
    paper = "Liu et al., ICML 2024"
    implemented_by = "peft"
    Settings = DoRASettings

    def peft_config(self, model: nn.Module | None = None):
        from peft import LoraConfig

        s = self.settings
        family = peft_family_kwargs(model, s) if model is not None else {"target_modules": list(s.target_modules)}
        return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, use_dora=True, **family)

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The backbone with W′ = m·V/‖V‖ folded into its weights (peft ``merge_and_unload``)."""
        return model.merge_and_unload()
