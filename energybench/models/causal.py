"""The ``causal`` family: decoder-only LMs (Llama, Qwen2/3, Mistral, Phi, GPT-2) trained as prompt + continuation.

Loads as ``AutoModelForCausalLM`` (hub name or a save_pretrained() folder).
A text-to-text task becomes one sequence, the prompt followed by the target
string and EOS; the loss covers the continuation tokens only (prompt and
padding labelled −100, see ``energybench.train.causal``). Classification is
rank classification over the candidate continuations, as for seq2seq, so the
same tasks and metrics serve all three families; a generative task
(``synth-math``) is scored by exact match of greedy generation.

Tiny presets (random weights, the ByT5 byte vocabulary of 384): ``tiny-llama``
(2 layers, 64 wide, grouped-query attention with 2 key/value heads) and
``tiny-gpt2``. Shape-only presets carry the public checkpoints' dimensions
(vocabulary included) for ``estimate`` and benchmarks; building one on CPU
allocates the full model, so tests never build them.

Where methods need the structure they ask this module: the decoder layers
(``layers``), each layer's attention and MLP blocks (``blocks``: Houlsby's
placement), every weight matrix of a layer (``matrix_modules``: q, k, v, o
and the MLP projections; GPT-2's fused ``c_attn`` and its ``Conv1D``s
included), the final norm and LM head, and a graph-free pass returning every
layer's raw output before the final norm (``layer_states``).
"""

from __future__ import annotations

import torch
from torch import nn

from energybench.models.family import Family, Preset

TINY_CAUSAL: dict[str, dict] = {
    "tiny-llama": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2),
    "tiny-llama-4layer": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2),
    "tiny-gpt2": dict(arch="gpt2", n_embd=64, n_inner=128, n_layer=2, n_head=4),
    # The public checkpoints' dimensions (config.json of each), random weights: estimate/benchmarks only.
    "llama-3.2-1b-shape": dict(arch="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                               tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072),
    "llama-3.2-3b-shape": dict(arch="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                               num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                               tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072),
    "llama-2-7b-shape": dict(arch="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                             tie_word_embeddings=False, rope_theta=10000.0, max_position_embeddings=4096),
}
SHAPE_ONLY = tuple(n for n in TINY_CAUSAL if n.endswith("-shape"))


def causal_config(preset: str, vocab_size: int = 384, **overrides):
    """The transformers config of a causal preset (byte vocabulary unless the preset fixes its own)."""
    from transformers import GPT2Config, LlamaConfig

    kwargs = dict(TINY_CAUSAL[preset])
    arch = kwargs.pop("arch")
    kwargs.setdefault("vocab_size", vocab_size)
    kwargs.update(overrides)
    special = dict(pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "gpt2":
        return GPT2Config(**{"n_positions": 512, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                             **special, **kwargs})
    kwargs.setdefault("tie_word_embeddings", False)
    kwargs.setdefault("max_position_embeddings", 512)
    return LlamaConfig(**{"attention_dropout": 0.0, "rms_norm_eps": 1e-5, **special, **kwargs})  # overrides win


class CausalFamily(Family):
    name = "causal"
    scoring = "rank"
    presets = {n: Preset(n, "causal", kw) for n, kw in TINY_CAUSAL.items()}
    auto_model = "AutoModelForCausalLM"

    def preset_config(self, preset: Preset, vocab_size: int, num_labels: int | None):
        return causal_config(preset.name, vocab_size=vocab_size)

    def matches(self, config) -> bool:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return (not getattr(config, "is_encoder_decoder", False)
                and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)

    def build_preset(self, preset: Preset, tokenizer, seed: int, num_labels: int | None,
                     config_overrides: dict | None = None) -> nn.Module:
        from transformers import AutoModelForCausalLM

        cfg = causal_config(preset.name, **{"vocab_size": len(tokenizer), **(config_overrides or {})})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AutoModelForCausalLM.from_config(cfg)

    def load_pretrained(self, source: str, num_labels: int | None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source)
        tok = AutoTokenizer.from_pretrained(source)
        if tok.pad_token_id is None:  # GPT-2, Llama: no pad token; padding is masked and labelled −100 anyway
            tok.pad_token = tok.eos_token
        return model, tok

    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM"


FAMILY = CausalFamily()


def unwrap(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_causal(model: nn.Module) -> bool:
    from energybench.models.family import family_of

    return family_of(model).name == "causal"


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (``model.model`` on Llama-likes, ``transformer`` on GPT-2)."""
    return unwrap(model).base_model


def layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers: ``layers`` (Llama, Qwen, Mistral, Phi) or ``h`` (GPT-2)."""
    base = decoder(model)
    for attr in ("layers", "h"):
        stack = getattr(base, attr, None)
        if isinstance(stack, nn.ModuleList):
            return stack
    raise TypeError(f"{type(unwrap(model)).__name__}: expected its decoder layers at <base>.layers or <base>.h")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm between the last layer and the LM head (``norm``, ``ln_f`` or ``final_layernorm``)."""
    base = decoder(model)
    for attr in ("norm", "ln_f", "final_layernorm"):
        norm = getattr(base, attr, None)
        if isinstance(norm, nn.Module):
            return norm
    raise TypeError(f"{type(unwrap(model)).__name__}: no final norm (norm / ln_f / final_layernorm) found")


def lm_head(model: nn.Module) -> nn.Module:
    return unwrap(model).get_output_embeddings()


def hidden_size(model: nn.Module) -> int:
    return unwrap(model).config.hidden_size


_ATTENTION = ("self_attn", "attn", "self_attention")
_MLP = ("mlp", "feed_forward")


def blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of each layer's attention block and MLP block, whose outputs meet a residual add."""
    out = []
    for i, layer in enumerate(layers(model)):
        for names in (_ATTENTION, _MLP):
            found = next(((n, getattr(layer, n)) for n in names if isinstance(getattr(layer, n, None), nn.Module)), None)
            if found is None:
                raise TypeError(f"{type(unwrap(model)).__name__} layer {i} has none of {names}")
            out.append((f"layers.{i}.{found[0]}", found[1]))
    return out


def _is_matrix(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def matrix_modules(model: nn.Module, targets: list[str] | None = None) -> list[tuple[nn.Module, str, str]]:
    """(parent, attribute, full name) of every weight matrix of every layer, or those whose name ends in a target.

    Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
    GPT-2: attn.c_attn (fused q, k, v), attn.c_proj, mlp.c_fc, mlp.c_proj (``Conv1D``).
    """
    out = []
    for i, layer in enumerate(layers(model)):
        for name, m in layer.named_modules():
            if _is_matrix(m) and (targets is None or any(name == t or name.endswith("." + t) for t in targets)):
                parent_name, _, attr = name.rpartition(".")
                out.append((layer.get_submodule(parent_name) if parent_name else layer, attr, f"layers.{i}.{name}"))
    return out


def as_linear(module: nn.Module) -> nn.Linear:
    """``module`` as an ``nn.Linear`` computing the same map (GPT-2's ``Conv1D`` stores its weight transposed)."""
    if isinstance(module, nn.Linear):
        return module
    w = module.weight  # Conv1D: (in, out), y = x·W + b
    lin = nn.Linear(w.shape[0], w.shape[1], bias=module.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.T)
        if module.bias is not None:
            lin.bias.copy_(module.bias)
    lin.weight.requires_grad_(w.requires_grad)
    if module.bias is not None:
        lin.bias.requires_grad_(module.bias.requires_grad)
    return lin


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def layer_states(model: nn.Module, input_ids, attention_mask=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Graph-free backbone pass: (token embeddings, [raw output of layer 1, …, layer N]).

    Layer outputs are captured by forward hooks, so the last one is the
    residual stream *before* the final norm (Hugging Face's ``hidden_states``
    tuple ends with the normed state instead).
    """
    states: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: states.append(_first(out))) for layer in layers(model)]
    try:
        decoder(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return unwrap(model).get_input_embeddings()(input_ids), states


def shifted_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mean next-token cross-entropy over labels != −100, as transformers' causal LMs compute it."""
    if labels is None:
        return None
    logits = logits[:, :-1].float()
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                       ignore_index=-100)
