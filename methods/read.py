"""READ — REcurrent ADaptation (Nguyen, Wang et al., arXiv 2305.15348), on T5.

The backbone stays frozen and runs once per step under ``torch.no_grad()``;
a small recurrent network learns a *correction* δϕ of the backbone's output
from the hidden states the backbone produced (paper §2.2, Algorithm 1, with
the simplifications of Appendix B.1):

- ϕ_E,i: the output of encoder block i (i = 1..N_E), ϕ_D,j: the output of
  decoder block j (j = 1..N_D). These are the raw residual-stream states that
  ``T5Block`` returns, captured by forward hooks — *not* the entries of
  Hugging Face's ``hidden_states`` tuple, whose last entry has already been
  through the stack's final layer norm.
- σ_D,j: decoder block j's cross-attention probabilities, averaged over heads
  (one reading of the paper, which assumes a single head), shape (tgt, src):
  the plain softmax of Algorithm 1, taken *before* the backbone's attention
  dropout (in training mode the probabilities T5 returns are after it), so
  every row sums to 1. The backbone's own forward keeps its dropout.
- Encoder: h_E,0 = 0; h_E,i = N_E(ϕ_E,i, h_E,i−1). The recurrence runs over
  the *layer index*; each source token is an independent sequence.
- Decoder: ψ_j = Σ_β σ_D,j[·,β] · Ψ h_E,N_E[β]; x_j = ϕ_D,j + ψ_j;
  h_D,0 = 0; h_D,j = N_D(x_j, h_D,j−1), each target token a sequence.
- Adapted output ϕ′ = ϕ_D,N_D + W_out h_D,N_D. It then goes through exactly
  what the backbone applies after its last decoder block: the decoder's
  final layer norm, its dropout, the d_model**-0.5 rescale when the config
  asks for it (``scale_decoder_outputs``; tied-embedding T5 checkpoints), and
  the frozen LM head. Adding the correction *before* the final layer norm is
  the paper's definition: δϕ is a correction of a layer's output, and the
  final norm is not part of any layer.

Choices the paper leaves open, made here and documented:

- N_E, N_D are ``torch.nn`` RNN/LSTM/GRU cells with input size d_model: the
  cell's input weights are the d_model → rnn_dim projection. Ψ maps
  rnn_dim → d_model, W_out maps rnn_dim → d_model and starts at zero, so at
  initialisation the correction is exactly 0 and READ *is* the backbone.
- ``normalize_inputs``: the joiner divides each backbone state it feeds an
  RNN by its root-mean-square (parameter-free, like T5's own pre-norm).
  Pretrained T5's residual stream reaches magnitudes in the hundreds, which
  would saturate tanh/sigmoid gates; the correction is still added to the
  unnormalised ϕ_D,N_D.

The trainable parameters are the two RNNs, Ψ and W_out: their count depends
on d_model and rnn_dim, never on the number of layers. The cross-attention
probabilities need the decoder's *eager* attention (SDPA does not return
them); ``apply`` switches the backbone's decoder to it, which changes nothing
but float rounding. Inference is the same backbone pass followed by the RNNs
(nothing to merge).

Deliberate differences from the paper, and the setting that restores its form:

- RMS-normalised RNN inputs (``normalize_inputs=True``, above); the paper
  feeds the states as they are: ``normalize_inputs=False``.
- σ averaged over heads (the paper writes a single head); no setting.
- σ is tapped before the backbone's attention dropout, as Algorithm 1's plain
  softmax; this is the paper's form, not a difference.

Encoder family (BERT, RoBERTa, DeBERTa, MiniLM): N_E over the encoder
layers only, the correction added to the last layer's states before the
pooler and the trainable head, no Ψ (no decoder) — see
``methods/read_encoder.py``.

Causal family (Llama, Qwen, Mistral, GPT-2): N_D over the decoder layers,
the correction added to the last layer's state before the final norm and
the frozen LM head; with no encoder there is no Ψ term — see
``methods/read_causal.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers.modeling_outputs import Seq2SeqLMOutput

from energybench.methods.base import ApplyContext, Method, MethodSettings, freeze, is_encoder
from energybench.models.family import family_of

_CELL = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


class READSettings(MethodSettings):
    rnn_type: Literal["rnn", "lstm", "gru"] = Field("lstm", description="recurrent cell of N_E and N_D (paper grid: rnn, lstm, gru)")
    rnn_dim: PositiveInt = Field(128, description="RNN hidden size (paper grid: 128, 256)")
    normalize_inputs: bool = Field(True, description="RMS-normalise backbone states before they enter the RNNs")


class READCorrector(nn.Module):
    """Everything READ trains: N_E, N_D, Ψ and the zero-initialised output map.

    The recurrences are written as a loop of ``torch.nn`` RNN/LSTM/GRU cells
    over the layer index (at most a few dozen steps). The fused multi-step
    modules (nn.LSTM & co.) would compute the same thing, but their CPU
    (oneDNN) and GPU (cuDNN) kernels save a backend-specific workspace for
    backward that here would dwarf the states READ actually needs.
    """

    def __init__(self, d_model: int, rnn_type: str, rnn_dim: int):
        super().__init__()
        cell = _CELL[rnn_type]
        self.encoder_rnn = cell(d_model, rnn_dim)
        self.decoder_rnn = cell(d_model, rnn_dim)
        self.psi = nn.Linear(rnn_dim, d_model, bias=False)
        self.out = nn.Linear(rnn_dim, d_model, bias=False)
        nn.init.zeros_(self.out.weight)

    @staticmethod
    def _last_state(cell: nn.Module, xs: torch.Tensor) -> torch.Tensor:
        """h after feeding xs[0], xs[1], … from h_0 = 0 (xs: steps × sequences × d)."""
        state = None
        for x in xs:
            state = cell(x, state)
        return state[0] if isinstance(state, tuple) else state

    def forward(self, enc_states: torch.Tensor, dec_states: torch.Tensor, cross_probs: torch.Tensor) -> torch.Tensor:
        """Correction of the last decoder state.

        enc_states (N_E, batch, src, d), dec_states (N_D, batch, tgt, d),
        cross_probs (N_D, batch, tgt, src) → (batch, tgt, d).
        """
        n_enc, b, m, d = enc_states.shape
        n_dec, _, n, _ = dec_states.shape
        h_enc = self._last_state(self.encoder_rnn, enc_states.reshape(n_enc, b * m, d))  # h_E,N_E per source token
        psi = torch.einsum("jbnm,bmd->jbnd", cross_probs, self.psi(h_enc).reshape(b, m, d))  # ψ_j per target token
        x = (dec_states + psi).reshape(n_dec, b * n, d)
        h_dec = self._last_state(self.decoder_rnn, x)                                     # h_D,N_D
        return self.out(h_dec).reshape(b, n, d)


def _rms_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class _SoftmaxTap(TorchFunctionMode):
    """Active during one cross-attention call: keeps the softmax's output, σ before attention dropout.

    The probabilities an eager T5 attention returns have been through its attention dropout in training
    mode (rows then sum to anything around 1); Algorithm 1 uses the plain softmax. Tapping the softmax
    itself gives σ without computing anything twice and leaves the backbone's own forward untouched.
    """

    def __init__(self):
        super().__init__()
        self.probs: torch.Tensor | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (nn.functional.softmax, torch.softmax, torch.Tensor.softmax):
            self.probs = out
        return out


def _tap_cross_attention(module: nn.Module, cross: list) -> list:
    """Hooks on one EncDecAttention that append its pre-dropout probabilities (or None) to ``cross``."""
    tap = _SoftmaxTap()

    def start(_m, _i):
        tap.probs = None
        tap.__enter__()

    def stop(_m, _i, _out):
        tap.__exit__(None, None, None)
        cross.append(tap.probs)

    return [module.register_forward_pre_hook(start), module.register_forward_hook(stop, always_call=True)]


@contextmanager
def block_outputs(blocks):
    """Each block's output (its hidden states, the first element) in call order, for the block's duration;
    the side networks (READ here, LST) read the frozen backbone's states so."""
    states: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: states.append(out[0])) for b in blocks]
    try:
        yield states
    finally:
        for h in hooks:
            h.remove()


@contextmanager
def _capture(blocks, cross_modules=()):
    """Record each block's output and each cross-attention's probabilities (before dropout) during one pass."""
    cross: list = []
    hooks = [h for module in cross_modules for h in _tap_cross_attention(module, cross)]
    try:
        with block_outputs(blocks) as states:
            yield states, cross
    finally:
        for h in hooks:
            h.remove()


def scale_decoder_outputs(config) -> bool:
    """Whether the backbone multiplies the last decoder state by d_model**-0.5 before the LM head."""
    flag = getattr(config, "scale_decoder_outputs", None)
    return bool(config.tie_word_embeddings if flag is None else flag)


def side_network_inputs(backbone: nn.Module, method: str, input_ids, attention_mask, labels, decoder_input_ids):
    """(attention_mask, decoder_input_ids) with T5's defaults filled in, as the backbone's own forward would."""
    if decoder_input_ids is None:
        if labels is None:
            raise ValueError(f"{method} needs labels or decoder_input_ids")
        decoder_input_ids = backbone._shift_right(labels)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return attention_mask, decoder_input_ids


def lm_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mean token cross-entropy over labels != -100, as Hugging Face's T5 computes it."""
    if labels is None:
        return None
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


class READModel(nn.Module):
    """A frozen T5 plus READ's corrector; what the training loop trains."""

    def __init__(self, backbone: nn.Module, corrector: READCorrector, normalize_inputs: bool):
        super().__init__()
        self.backbone = backbone
        self.corrector = corrector
        self.normalize_inputs = normalize_inputs
        self.config = backbone.config

    @torch.no_grad()
    def encode_source(self, input_ids, attention_mask) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The frozen encoder's pass: every block's output ϕ_E and the encoder's last hidden state. It depends
        on the source alone, so rank classification computes it once for all candidate labels."""
        with _capture(self.backbone.encoder.block) as (enc, _):
            enc_out = self.backbone.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return enc, enc_out.last_hidden_state

    def reusable_encoding(self, input_ids, attention_mask) -> dict:
        """Keyword arguments for :meth:`forward` that reuse one encoder pass (see train/evaluate.py)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "encoded": self.encode_source(input_ids, attention_mask)}

    @torch.no_grad()
    def backbone_states(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoded=None):
        """One graph-free backbone pass: ϕ_E (N_E, b, src, d), ϕ_D (N_D, b, tgt, d), σ_D (N_D, b, tgt, src)."""
        bb = self.backbone
        enc, enc_last = encoded if encoded is not None else self.encode_source(input_ids, attention_mask)
        with _capture(bb.decoder.block, [b.layer[1].EncDecAttention for b in bb.decoder.block]) as (dec, cross):
            # No use_cache override: the decoder takes the same path as in the backbone's own forward,
            # so READ at initialisation reproduces the backbone bit for bit.
            bb.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                       encoder_hidden_states=enc_last, encoder_attention_mask=attention_mask)
        if any(c is None for c in cross):
            raise RuntimeError("READ needs the decoder's cross-attention probabilities; the decoder must use eager attention")
        return torch.stack(enc), torch.stack(dec), torch.stack([c.mean(dim=1) for c in cross])

    def forward(self, input_ids, attention_mask=None, labels=None, decoder_attention_mask=None,
                decoder_input_ids=None, encoded=None) -> Seq2SeqLMOutput:
        attention_mask, decoder_input_ids = side_network_inputs(self.backbone, "READ", input_ids, attention_mask,
                                                                labels, decoder_input_ids)
        enc, dec, cross = self.backbone_states(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                               encoded)
        last = dec[-1]                                                  # ϕ_D,N_D, before the final norm
        if self.normalize_inputs:
            enc, dec = _rms_normalize(enc), _rms_normalize(dec)
        adapted = last + self.corrector(enc, dec, cross)                # ϕ′ = ϕ_D,N_D + h_D,N_D
        decoder = self.backbone.decoder
        seq = decoder.dropout(decoder.final_layer_norm(adapted))
        if scale_decoder_outputs(self.config):
            seq = seq * (self.config.d_model ** -0.5)
        logits = self.backbone.lm_head(seq)
        return Seq2SeqLMOutput(loss=lm_loss(logits, labels), logits=logits)


def check_t5_like(model: nn.Module, method: str) -> None:
    """Fail early, in words, on a backbone these side-network methods do not know."""
    needed = ("encoder", "decoder", "lm_head", "_shift_right")
    if not all(hasattr(model, a) for a in needed) or not hasattr(model.decoder, "block"):
        raise TypeError(f"{method} is implemented for T5-style encoder-decoder backbones "
                        f"(T5ForConditionalGeneration); got {type(model).__name__}")


class READ(Method):
    name = "read"
    summary = "frozen backbone run once without a graph; a small RNN learns a correction of its output"
    paper = "Nguyen, Wang et al., arXiv 2305.15348"
    Settings = READSettings

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        if is_encoder(model):  # N_E only, correction before the pooler/head: methods/read_encoder.py
            from energybench.methods.read_encoder import apply_read_encoder

            s = self.settings
            return apply_read_encoder(model, _CELL[s.rnn_type], s.rnn_dim, s.normalize_inputs, ctx.seed)
        if family_of(model).name == "causal":  # N_D only, correction before the final norm: methods/read_causal.py
            from energybench.methods.read_causal import apply_read_causal

            s = self.settings
            return apply_read_causal(model, _CELL[s.rnn_type], s.rnn_dim, s.normalize_inputs, ctx.seed)
        check_t5_like(model, "READ")
        freeze(model)
        model.decoder.set_attn_implementation("eager")
        s = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            corrector = READCorrector(model.config.d_model, s.rnn_type, s.rnn_dim)
        p = next(model.parameters())
        corrector.to(device=p.device, dtype=p.dtype)
        return READModel(model, corrector, s.normalize_inputs)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return {"rnn_type": self.settings.rnn_type, "rnn_dim": self.settings.rnn_dim,
                "normalize_inputs": self.settings.normalize_inputs}
