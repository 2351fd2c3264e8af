"""AdaLoRA (Zhang et al., ICLR 2023), wrapping Hugging Face peft's implementation (``AdaLoraConfig``).

Each adapted matrix gets an SVD-shaped update ΔW = B·(A ⊙ E)·α/ranknum: A (r×in)
and B (out×r) play the singular vectors, E (r×1) the singular values, all three
trained; ranknum is a frozen parameter fixed at init_r, so the scale stays
α/init_r while ranks shrink. E starts at 0, so the model is the backbone at
initialisation. Ranks are moved between matrices by importance: after every
optimizer step ``on_step_end`` calls peft's ``update_and_allocate`` (it reads
the gradients, hence before ``zero_grad``), which masks the least important
(A row, E entry, B column) triplets so that the number of live triplets over
all n matrices follows the paper's cubic budget, from n·init_r down to
n·target_r:

- t ≤ tinit: n·init_r (warm-up, no masking);
- tinit < t ≤ T − tfinal: ⌊n·target_r + n·(init_r − target_r)·(1 − (t − tinit)/(T − tinit − tfinal))³⌋,
  masking every ``deltaT`` steps and at t = T − tfinal, where the final
  allocation is frozen;
- t > T − tfinal: the frozen allocation is re-applied after every step.

T (peft's ``total_step``) is the run's planned number of optimizer steps,
``ApplyContext.total_steps``; users never give it. A schedule with no
budgeting phase (tinit + tfinal ≥ T) is an error — peft refuses it; call
:func:`check_schedule` before training to report it early. Steps are 1-based
(the training loop passes the number of optimizer steps done), so the last
step T is the final allocation when tfinal = 0.

The orthogonality penalty γ·mean over the 2n factors of ‖AAᵀ − I‖_F and
‖BᵀB − I‖_F (unsquared, unlike the paper's Eq. 4) is added to ``out.loss`` by
peft's ``AdaLoraModel.forward`` whenever labels are given. That only happens
when the model is wrapped with ``task_type="SEQ_2_SEQ_LM"``: a plain
``PeftModel`` forwards straight to the backbone and the penalty is silently
lost. So ``regularizer`` is not overridden here — adding it again would count
it twice.

Targets: by default the paper's six matrix types (attention q, k, v, o and
both feed-forward matrices; ``PAPER_TARGETS_T5``), which is also peft's T5
default for AdaLoRA; ``target_modules`` narrows or changes them (e.g.
``[q, v]``, LoRA's default, for a like-for-like comparison with ``lora``).
T5 v1.1's gated feed-forward names its input matrices ``wi_0``, ``wi_1``:
list them there, peft matches names exactly.

Only checkpoints taken once the allocation is final (step ≥ T − tfinal) may
become the loop's best validation state (``checkpoint_allowed``), so the
model evaluated and described after training always has the final budget.

Causal family (Llama, Qwen, Mistral, GPT-2): peft's ``task_type="CAUSAL_LM"``
(``PeftModelForCausalLM`` also routes through ``AdaLoraModel.forward``, so the
penalty is added there too) on peft's default targets for the architecture
(Llama: q_proj, v_proj; GPT-2: c_attn) unless ``target_modules`` is set
(``[all-linear]`` accepted).

Masking zeroes E entries; it never shrinks tensors, so compute and memory stay
at init_r for the whole run. ``for_inference`` merges ΔW into the weights.

Encoder family (the paper's GLUE runs on DeBERTaV3-base): when the suite
names no targets, all six matrix types of every layer (Wq, Wk, Wv, Wo, Wf1,
Wf2, read from the layer's own ``nn.Linear`` modules), ``task_type="SEQ_CLS"``
and the new classification head trained (``modules_to_save``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from energybench.methods.base import ApplyContext, Method, MethodSettings, is_encoder, peft_family_kwargs
from energybench.models.family import family_of

ADAPTER = "default"  # peft's name for the single adapter get_peft_model adds
# The paper adapts all of W_q, W_k, W_v, W_o, W_f1, W_f2 (its §4); on T5 that is peft's own AdaLoRA default.
PAPER_TARGETS_T5 = ("q", "k", "v", "o", "wi", "wo")


class AdaLoRASettings(MethodSettings):
    init_r: PositiveInt = Field(12, description="initial rank of every adapted matrix (b(0) = n·init_r)")
    target_r: PositiveInt = Field(8, description="target average rank per matrix after budgeting (b(T) = n·target_r)")
    tinit: NonNegativeInt = Field(0, description="warm-up steps before any rank is pruned")
    tfinal: NonNegativeInt = Field(0, description="last steps trained with the final rank allocation fixed")
    deltaT: PositiveInt = Field(1, description="steps between two budget allocations during the budgeting phase")
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA factor of the smoothed sensitivity Ī")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA factor of the uncertainty Ū")
    orth_reg_weight: float = Field(0.5, ge=0, description="γ, weight of the orthogonality penalty added to the loss")
    lora_alpha: float = Field(8.0, gt=0, description="scaling numerator: the update is scaled by lora_alpha/init_r")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input of the low-rank path")
    target_modules: list[str] = Field(
        default_factory=lambda: list(PAPER_TARGETS_T5), min_length=1,
        description="names of the nn.Linear modules to adapt (default: the paper's six, T5's attention q, k, v, o "
                    "and feed-forward wi, wo — peft's own T5 default; gated-FFN T5 v1.1 names wi_0, wi_1)")

    @model_validator(mode="after")
    def _check(self) -> "AdaLoRASettings":
        if self.target_r >= self.init_r:
            raise ValueError(
                f"target_r ({self.target_r}) must be smaller than init_r ({self.init_r}): AdaLoRA prunes ranks from "
                f"init_r down to target_r (peft's allocator fails when there is nothing to prune); "
                f"for a fixed rank use the 'lora' method")
        return self


def check_schedule(settings: AdaLoRASettings, total_steps: int) -> str | None:
    """Why this run's rank schedule is impossible, or None when it has a budgeting phase.

    Known only once the run's planned optimizer steps T are: the budget shrinks
    during tinit < t ≤ T − tfinal, so tinit + tfinal must be < T (peft raises
    otherwise). Call it from suite validation, before any training.
    """
    if total_steps <= 0:
        return f"adalora needs a positive number of planned optimizer steps, got {total_steps}"
    if settings.tinit + settings.tfinal >= total_steps:
        return (f"adalora: tinit ({settings.tinit}) + tfinal ({settings.tfinal}) >= the run's {total_steps} planned "
                f"optimizer steps, so there is no budgeting phase to prune ranks from init_r ({settings.init_r}) "
                f"to target_r ({settings.target_r}); lower tinit/tfinal or train for more steps")
    return None


class AdaLoRA(Method):
    name = "adalora"
    summary = "SVD-shaped low-rank updates whose ranks are reallocated by importance (peft)"
    paper = "Zhang et al., ICLR 2023"
    implemented_by = "peft"
    Settings = AdaLoRASettings

    @classmethod
    def check_schedule(cls, settings: AdaLoRASettings, total_steps: int) -> str | None:
        """See the module function :func:`check_schedule`."""
        return check_schedule(settings, total_steps)

    def peft_config(self, total_steps: int, model: nn.Module | None = None):
        from peft import AdaLoraConfig

        if model is not None and (is_encoder(model) or family_of(model).name == "causal"):
            return self._encoder_peft_config(total_steps, model)  # causal: peft's CAUSAL_LM targets and task type

        problem = check_schedule(self.settings, total_steps)
        if problem is not None:
            raise ValueError(problem)
        s = self.settings
        return AdaLoraConfig(
            task_type="SEQ_2_SEQ_LM",  # routes forward through AdaLoraModel.forward, which adds the penalty
            init_r=s.init_r, target_r=s.target_r, tinit=s.tinit, tfinal=s.tfinal, deltaT=s.deltaT,
            beta1=s.beta1, beta2=s.beta2, orth_reg_weight=s.orth_reg_weight, total_step=total_steps,
            lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout, target_modules=list(s.target_modules))

    def _encoder_peft_config(self, total_steps: int, model: nn.Module):
        """Encoder family: all six matrix types of every layer (the paper's GLUE setup), the head trained (SEQ_CLS).

        peft's ``PeftModelForSequenceClassification`` also routes forward
        through ``AdaLoraModel.forward``, so the orthogonality penalty is added
        to the head's loss as on T5.
        """
        from peft import AdaLoraConfig

        problem = check_schedule(self.settings, total_steps)
        if problem is not None:
            raise ValueError(problem)
        s = self.settings
        return AdaLoraConfig(
            init_r=s.init_r, target_r=s.target_r, tinit=s.tinit, tfinal=s.tfinal, deltaT=s.deltaT,
            beta1=s.beta1, beta2=s.beta2, orth_reg_weight=s.orth_reg_weight, total_step=total_steps,
            lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout, **peft_family_kwargs(model, s, default="all"))

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(ctx.total_steps, model))

    def on_step_end(self, model: nn.Module, step: int, total_steps: int) -> None:
        model.base_model.update_and_allocate(step)

    def checkpoint_allowed(self, model: nn.Module, step: int, total_steps: int) -> bool:
        """Only states from the final allocation on (peft fixes it at step T − tfinal) may be restored as best."""
        return step >= total_steps - self.settings.tfinal

    def for_inference(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Live rank of every adapted matrix: its number of non-zero singular values E.

        Counted from the weights rather than read from peft's mask, so it is the
        rank of the update the model holds now (e.g. after the loop restored its
        best checkpoint). ``allocation_final`` says whether peft fixed the final
        allocation (step T − tfinal was reached).
        """
        rank_pattern: dict[str, int] = {}
        for name, module in model.named_modules():
            e = getattr(module, "lora_E", None)
            if isinstance(e, nn.ParameterDict) and ADAPTER in e:
                key = name.removeprefix("base_model.model.")
                rank_pattern[key] = int((e[ADAPTER].detach() != 0).sum())
        config = model.peft_config[ADAPTER]
        n = len(rank_pattern)
        return {
            "rank_pattern": rank_pattern,
            "total_rank": sum(rank_pattern.values()),
            "init_total_rank": n * self.settings.init_r,
            "target_total_rank": n * self.settings.target_r,
            # peft stores a rank pattern at each allocation and clears its importance scores only at the final one
            "allocation_final": bool(config.rank_pattern is not None and not model.base_model.rankallocator.ipt),
        }
