"""The ``encoder`` family: BERT-like encoders with a classification head (BERT, RoBERTa, DeBERTa-v2/v3, ELECTRA, MiniLM).

Loads as ``AutoModelForSequenceClassification`` with ``num_labels`` from the
task (1 for STS-B-like regression, trained with MSE as the AdaLoRA paper
does; cross-entropy otherwise — both are transformers' own losses, chosen by
``problem_type``). A task is scored by the head: argmax of the logits, or the
single regression output. The head (every top-level module beside the base
encoder: BERT's ``classifier``, DeBERTa's ``pooler`` and ``classifier``) is
new for the task, so it trains with every method.

Where methods need the structure, they ask this module: the transformer
layers (``layers``), every weight matrix of a layer (the six matrix types
Wq, Wk, Wv, Wo, Wf1, Wf2: ``matrix_targets``), the two projections whose
output enters a residual add (``residual_projections``, Houlsby's placement),
a graph-free pass that returns every layer's output (``layer_states``) and
the model's own pooler/head/loss applied to corrected final states
(``head_forward``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from energybench.models.family import Family, Preset

TINY_BERT: dict[str, dict] = {
    "tiny-bert": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "tiny-bert-4layer": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4),
}


def problem_type(num_labels: int | None) -> str:
    return "regression" if num_labels == 1 else "single_label_classification"


def tiny_bert_config(preset: str, vocab_size: int = 384, num_labels: int = 2, **overrides):
    from transformers import BertConfig

    kwargs = {"max_position_embeddings": 512, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
              "pad_token_id": 0, **TINY_BERT[preset], **overrides}  # overrides win, dropout included
    return BertConfig(vocab_size=vocab_size, num_labels=num_labels, problem_type=problem_type(num_labels), **kwargs)


class EncoderFamily(Family):
    name = "encoder"
    scoring = "head"
    presets = {n: Preset(n, "encoder", kw) for n, kw in TINY_BERT.items()}
    auto_model = "AutoModelForSequenceClassification"

    def preset_config(self, preset: Preset, vocab_size: int, num_labels: int | None):
        return tiny_bert_config(preset.name, vocab_size=vocab_size, num_labels=num_labels or 2)

    def matches(self, config) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        return not getattr(config, "is_encoder_decoder", False) and config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES

    def build_preset(self, preset: Preset, tokenizer, seed: int, num_labels: int | None,
                     config_overrides: dict | None = None) -> nn.Module:
        from transformers import BertForSequenceClassification

        cfg = tiny_bert_config(preset.name, vocab_size=len(tokenizer), num_labels=num_labels or 2,
                               **(config_overrides or {}))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return BertForSequenceClassification(cfg)

    def load_pretrained(self, source: str, num_labels: int | None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        n = num_labels or 2
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=n, problem_type=problem_type(n))
        return model, AutoTokenizer.from_pretrained(source)

    def head_modules(self, model: nn.Module) -> list[str]:
        model = unwrap(model)
        prefix = model.base_model_prefix
        return [name for name, child in model.named_children()
                if name != prefix and any(True for _ in child.parameters())]

    def peft_task_type(self) -> str | None:
        return "SEQ_CLS"


FAMILY = EncoderFamily()


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of the base encoder (``<base>.encoder.layer`` in every BERT-lineage model)."""
    base = unwrap(model).base_model
    stack = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise TypeError(f"{type(unwrap(model)).__name__}: expected its layers at <base>.encoder.layer "
                        "(the BERT-lineage layout the encoder family supports)")
    return stack


def matrix_targets(model: nn.Module) -> list[str]:
    """Names, relative to a layer, of every weight matrix of a layer (Wq, Wk, Wv, Wo, Wf1, Wf2 on BERT).

    Read from the first layer's ``nn.Linear`` modules rather than typed in, so
    RoBERTa, ELECTRA and DeBERTa-v2 (``query_proj``…) get their own names.
    Usable as peft ``target_modules`` (peft matches a name suffix).
    """
    return [name for name, m in layers(model)[0].named_modules() if isinstance(m, nn.Linear)]


def matrix_modules(model: nn.Module, targets: list[str] | None = None) -> list[tuple[nn.Module, str, str]]:
    """(parent, attribute, full name) of every targeted ``nn.Linear`` of every layer (default: all six types)."""
    targets = matrix_targets(model) if targets is None else list(targets)
    out = []
    for i, layer in enumerate(layers(model)):
        for name, m in layer.named_modules():
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
                parent_name, _, attr = name.rpartition(".")
                out.append((layer.get_submodule(parent_name) if parent_name else layer, attr, f"layer.{i}.{name}"))
    return out


def residual_projections(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Per layer, the attention output projection and the FFN's second projection (their outputs meet a residual)."""
    out = []
    for i, layer in enumerate(layers(model)):
        for path in ("attention.output.dense", "output.dense"):
            try:
                out.append((f"layer.{i}.{path}", layer.get_submodule(path)))
            except AttributeError:
                raise TypeError(f"{type(unwrap(model)).__name__} layer {i} has no {path}; Houlsby adapters on "
                                "encoders expect the BERT-lineage layer layout") from None
    return out


def hidden_size(model: nn.Module) -> int:
    return unwrap(model).config.hidden_size


@torch.no_grad()
def layer_states(model: nn.Module, input_ids, attention_mask=None, token_type_ids=None) -> tuple[torch.Tensor, ...]:
    """Graph-free backbone pass: (embedding output, layer 1 output, …, layer N output)."""
    base = unwrap(model).base_model
    kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
    out = base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True, **kwargs)
    return tuple(out.hidden_states)


@contextmanager
def _base_returns(model: nn.Module, outputs):
    base = model.base_model
    base.forward = lambda *args, **kwargs: outputs
    try:
        yield
    finally:
        del base.forward


def head_forward(model: nn.Module, sequence: torch.Tensor, attention_mask=None, labels=None):
    """The model's own pooler, dropout, head and loss applied to ``sequence`` as the last layer's output.

    The base encoder's forward is swapped for one that returns ``sequence``
    (and, where the base model has a pooler, the pooler of it), and the
    task model's forward runs as usual. So every architecture's own head
    and loss are used, and a correction added to the final states reaches
    the logits exactly as the backbone's states would.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = unwrap(model)
    pooler = getattr(model.base_model, "pooler", None)
    pooled = pooler(sequence) if pooler is not None else None
    outputs = BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)
    dummy = torch.zeros(sequence.shape[:2], dtype=torch.long, device=sequence.device)
    with _base_returns(model, outputs):
        return model(input_ids=dummy, attention_mask=attention_mask, labels=labels)
