"""The causal family: detection, prompt+continuation batches, rank classification, synth-math, local checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from energybench.models.backbones import load_backbone
from energybench.models.family import family_of
from energybench.tasks import load_task
from energybench.tasks.formatting import candidates, source_text
from energybench.train import causal as tc
from energybench.train.batches import training_batch
from energybench.train.evaluate import evaluate

CPU = torch.device("cpu")


@pytest.mark.parametrize("name,cls", [("tiny-llama", "LlamaForCausalLM"), ("tiny-gpt2", "GPT2LMHeadModel")])
def test_presets_are_causal_family(name, cls):
    b = load_backbone(name)
    assert b.family == "causal" and family_of(b.model).name == "causal" and type(b.model).__name__ == cls


def test_prompt_tokens_carry_no_loss():
    b = load_backbone("tiny-llama")
    data = load_task("synth-sst2")
    examples = data.train[:3]
    batch = training_batch(b.tokenizer, data.spec, examples, 64, 16, "causal")
    for row, ex in enumerate(examples):
        prompt = list(b.tokenizer(source_text(data.spec, ex) + "\nanswer:", add_special_tokens=False)["input_ids"])
        target = list(b.tokenizer(" " + data.spec.label_words[ex.label], add_special_tokens=False)["input_ids"]) + [1]
        n = len(prompt) + len(target)
        assert batch["input_ids"][row, :n].tolist() == prompt + target
        assert (batch["labels"][row, : len(prompt)] == -100).all()          # prompt: no loss
        assert batch["labels"][row, len(prompt):n].tolist() == target       # continuation (with EOS): loss
        assert (batch["labels"][row, n:] == -100).all() and (batch["attention_mask"][row, n:] == 0).all()
    # The model's loss is the mean next-token CE over continuation tokens only, computed here by hand.
    logits = b.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.float(), -1)
    terms = [-logp[r, t - 1, batch["labels"][r, t]] for r in range(3) for t in range(1, logits.shape[1])
             if batch["labels"][r, t] != -100]
    torch.testing.assert_close(b.model(**batch).loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_rank_scores_equal_direct_continuation_log_likelihood(name):
    b = load_backbone(name)
    b.model.eval()
    data = load_task("synth-pair")
    examples = data.test[:3]
    scores = tc.causal_candidate_scores(b.model, b.tokenizer, data.spec, examples, 256, 32, 2, CPU)
    for i, ex in enumerate(examples):
        prompt = list(b.tokenizer(source_text(data.spec, ex) + "\nanswer:", add_special_tokens=False)["input_ids"])
        for j, cand in enumerate(candidates(data.spec)):
            cont = list(b.tokenizer(" " + cand, add_special_tokens=False)["input_ids"]) + [1]
            ids = torch.tensor([prompt + cont])                          # one unpadded row
            with torch.no_grad():
                logp = torch.log_softmax(b.model(input_ids=ids).logits[0].double(), -1)
            direct = sum(float(logp[len(prompt) + k - 1, tok]) for k, tok in enumerate(cont))
            assert scores[i, j].item() == pytest.approx(direct, abs=1e-3)


class _Oracle(nn.Module):
    """Emits, greedily, the reference answer of whichever known prompt the row starts with (or nothing)."""

    def __init__(self, tokenizer, spec, examples, silent: bool = False):
        super().__init__()
        self.eos, self.vocab, self.silent = tokenizer.eos_token_id, len(tokenizer), silent
        self.answers = {tuple(tc.prompt_ids(tokenizer, spec, e, 64)):
                        list(tokenizer(str(e.label), add_special_tokens=False)["input_ids"]) + [self.eos]
                        for e in examples}

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for r, n in enumerate(attention_mask.sum(1).tolist()):
            row = input_ids[r, :n].tolist()
            prompt = next(p for p in self.answers if tuple(row[: len(p)]) == p)
            done = n - len(prompt)
            nxt = self.eos if self.silent else self.answers[prompt][done]
            logits[r, n - 1, nxt] = 1.0
        return type("Out", (), {"logits": logits})()


def test_synth_math_exact_match_is_100_for_a_copier_and_0_for_silence():
    b = load_backbone("tiny-llama")
    data = load_task("synth-math")
    examples = data.test[:12]
    assert all(isinstance(e.label, int) for e in examples) and data.spec.generative
    copier = _Oracle(b.tokenizer, data.spec, examples)
    assert evaluate(copier, b.tokenizer, data.spec, examples, 64, 8, 5, CPU, family="causal")[0] == 100.0
    silent = _Oracle(b.tokenizer, data.spec, examples, silent=True)
    assert evaluate(silent, b.tokenizer, data.spec, examples, 64, 8, 5, CPU, family="causal")[0] == 0.0
    # The cap: at most max_new_tokens tokens, even for a model that never stops.
    out = tc.greedy_generate(copier, b.tokenizer, [tc.prompt_ids(b.tokenizer, data.spec, examples[0], 64)], 1, CPU)
    assert len(out[0]) == 1


def test_synth_math_is_deterministic_and_correct():
    a, b = load_task("synth-math"), load_task("synth-math")
    assert a.train[:50] == b.train[:50]
    for e in a.train[:200]:
        x, op, y = e.text_a.rstrip("?.").split()[-3:]
        assert e.label == {"plus": int(x) + int(y), "minus": int(x) - int(y), "times": int(x) * int(y)}[op] >= 0


def test_generative_task_is_refused_on_seq2seq():
    b = load_backbone("tiny-t5")
    data = load_task("synth-math")
    with pytest.raises(ValueError, match="causal"):
        evaluate(b.model, b.tokenizer, data.spec, data.test[:2], 64, 8, 2, CPU, family="seq2seq")


@pytest.mark.parametrize("method_name", ["lora", "read"])
def test_local_checkpoint_folder_loads_by_path_and_trains(tmp_path, method_name):
    from energybench.methods.base import ApplyContext
    from energybench.registry import load_method
    from energybench.train.loop import fit
    from energybench.train.settings import TrainingSettings

    tiny = load_backbone("tiny-llama", seed=3)
    tiny.model.save_pretrained(tmp_path / "ckpt")
    tiny.tokenizer.save_pretrained(tmp_path / "ckpt")
    b = load_backbone("my-llama", path=str(tmp_path / "ckpt"))
    assert b.family == "causal"
    for (n, p), q in zip(b.model.named_parameters(), tiny.model.parameters()):
        assert torch.equal(p, q), n                                       # the saved weights, not a fresh init
    data = load_task("synth-sst2", max_train_examples=24)
    data.validation = data.validation[:8]
    cfg = TrainingSettings(batch_size=8, max_steps=3, max_source_length=48, max_target_length=8,
                           eval_batch_size=8, learning_rate=1e-2)
    cls = load_method(method_name)
    method = cls(cls.Settings())
    model = method.apply(b.model, ApplyContext(total_steps=3, seed=0))
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    res = fit(model, method, b.tokenizer, data, cfg, total_steps=3, device=CPU, seed=0, log=lambda _: None,
              **({"family": "causal"} if "family" in fit.__code__.co_varnames else {}))
    assert res.steps == 3 and res.final_train_loss is not None
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert moved or res.best_step == 0


def test_qwen2_is_causal_and_bitfit_trains_its_own_qkv_biases():
    from transformers import AutoModelForCausalLM, Qwen2Config

    from energybench.methods.base import ApplyContext, count_parameters
    from energybench.registry import load_method

    cfg = Qwen2Config(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1)
    model = AutoModelForCausalLM.from_config(cfg)
    assert family_of(model).name == "causal"
    cls = load_method("bitfit")
    model = cls(cls.Settings()).apply(model, ApplyContext(total_steps=4, seed=0))
    assert count_parameters(model)[0] == 2 * (64 + 32 + 32)  # q, k, v biases per layer; none added


@pytest.mark.parametrize("preset,method", [("tiny-llama", None), ("tiny-gpt2", None), ("tiny-llama", "lora"),
                                           ("tiny-llama", "adapter"), ("tiny-gpt2", "dydora")])
def test_kv_cached_generation_emits_the_tokens_of_recomputing_every_step(preset, method):
    """The cached path (model.generate, left padding) against the reference: the full forward re-run at every
    step on right-padded rows. Prompts of different lengths, so padding is exercised; 6 new tokens each."""
    from energybench.methods.base import ApplyContext
    from energybench.registry import load_method

    b = load_backbone(preset, seed=3)
    model = b.model if method is None else load_method(method)().apply(b.model, ApplyContext(total_steps=10, seed=0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move zero-initialised parts (LoRA's B, the adapter's up-projection) off zero
        for p in model.parameters():
            if p.requires_grad and method is not None:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    model.eval()
    data = load_task("synth-math")
    prompts = [tc.prompt_ids(b.tokenizer, data.spec, e, 64) for e in data.test[:4]]
    prompts[1] = prompts[1][:-5]
    assert len({len(p) for p in prompts}) > 1
    with torch.no_grad():
        cached = tc.greedy_generate(model, b.tokenizer, prompts, 6, CPU)
        reference = tc._recomputed_generate(model, b.tokenizer, prompts, 6, CPU)
    assert model.can_generate()  # the cached path ran (side networks take the recomputing one)
    assert cached == reference
    assert any(cached)
