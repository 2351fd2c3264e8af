"""Remembered meta shape rules: a repeated question gets the kernel's answer, and nothing that aliases is reused.

Expected values are what the meta kernels themselves return when asked without
the cache (and, for the accounting, what the step counts without it).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from energybench.measure import accounting
from energybench.measure.accounting import account_inference, account_training_step
from energybench.measure.meta_shapes import MetaShapeCache
from energybench.methods.base import ApplyContext
from energybench.models.backbones import load_backbone
from energybench.registry import load_method


def _meta(*shape, dtype=torch.float32, requires_grad=False):
    return torch.empty(*shape, device="meta", dtype=dtype, requires_grad=requires_grad)


def _layout(t: torch.Tensor):
    return tuple(t.shape), t.stride(), t.dtype, t.storage_offset(), t.untyped_storage().nbytes()


def test_a_repeated_functional_operator_is_answered_from_memory_with_a_fresh_storage():
    a, b = _meta(4, 1, 6), _meta(3, 1, dtype=torch.float16)
    expected = _layout(torch.add(a, b))  # broadcast (4, 3, 6), promoted to float32
    cache = MetaShapeCache(answers={})
    with cache:
        first = torch.add(a, b)
        second = torch.add(a, b)
    assert (cache.misses, cache.hits) == (1, 1)
    assert _layout(first) == _layout(second) == expected == ((4, 3, 6), (18, 6, 1), torch.float32, 0, 4 * 3 * 6 * 4)
    assert first.untyped_storage()._cdata != second.untyped_storage()._cdata


def test_arguments_that_change_the_answer_are_part_of_the_question():
    x, ones, other = _meta(2, 3), _meta(2, 3), _meta(3, 2)
    cache = MetaShapeCache(answers={})
    with cache:
        summed = [torch.sum(x, dim=d) for d in (0, 1)]
        wide = ones.to(torch.float64) * 2
        narrow = ones.to(torch.float16) * 2
        transposed = torch.mul(x.t(), 1.0)  # same shape question with other strides
        straight = torch.mul(other, 1.0)
    assert [s.shape for s in summed] == [(3,), (2,)]
    assert (wide.dtype, narrow.dtype) == (torch.float64, torch.float16)
    assert transposed.stride() == (1, 3) and straight.stride() == (2, 1)
    assert cache.hits == 0


def test_views_and_in_place_operators_always_run_the_kernel():
    x = _meta(2, 6)
    cache = MetaShapeCache(answers={})
    with cache:
        views = [x.view(3, 4), x.view(3, 4), x.t(), x.t()]
        y = _meta(2, 6)
        same = [y.add_(1.0), y.add_(1.0)]
    assert cache.hits == 0 and cache.passed >= 6
    assert all(v.untyped_storage()._cdata == x.untyped_storage()._cdata for v in views)
    assert all(s is y for s in same)


def test_tensors_that_are_not_plain_meta_tensors_pass_through():
    meta, two = _meta(3), torch.tensor(2.0)  # a 0-dim CPU tensor mixed into a meta computation
    cache = MetaShapeCache(answers={})
    with cache:
        cpu = [torch.ones(3) + torch.ones(3) for _ in range(2)]
        mixed = [meta * two for _ in range(2)]
    assert cache.hits == 0
    assert all(torch.equal(c, torch.full((3,), 2.0)) for c in cpu)
    assert all(m.is_meta and m.shape == (3,) for m in mixed)


def test_a_meta_step_reuses_answers_and_counts_exactly_what_it_counts_without_them(monkeypatch):
    method = load_method("lora")()
    model = method.apply(load_backbone("tiny-t5", seed=0, config_overrides={"dropout_rate": 0.1}).model,
                         ApplyContext(total_steps=10, seed=0))
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, 200, (3, 12), generator=g), "attention_mask": torch.ones(3, 12, dtype=torch.long),
             "labels": torch.randint(3, 200, (3, 4), generator=g)}

    def loss(m, b):
        return m(**b).loss

    def adamw(p):
        return torch.optim.AdamW(p, lr=1e-3)

    caches: list[MetaShapeCache] = []
    monkeypatch.setattr(accounting, "MetaShapeCache", lambda: caches.append(MetaShapeCache(answers={})) or caches[-1])
    cached = account_training_step(model, loss, batch, adamw, mode="fake", semantics="cuda")
    cached_infer = account_inference(model, lambda m, b: m(**b), batch, mode="fake", semantics="cuda")
    assert cached.engine == "meta" and len(caches) == 2
    assert all(c.hits > c.misses > 0 for c in caches), [(c.hits, c.misses) for c in caches]

    monkeypatch.setattr(accounting, "MetaShapeCache", lambda: MetaShapeCache(answers=_Forgetful()))
    plain = account_training_step(model, loss, batch, adamw, mode="fake", semantics="cuda")
    assert (cached.memory, cached.train_flops) == (plain.memory, plain.train_flops)
    assert cached_infer == account_inference(model, lambda m, b: m(**b), batch, mode="fake", semantics="cuda")


class _Forgetful(dict):
    """Answers nothing and keeps nothing: every question is a miss, run and counted afresh."""

    def get(self, key, default=None):
        return default

    def __setitem__(self, key, value):
        pass


def test_flops_remembered_with_the_answers_are_what_torchs_counter_counts_on_the_same_operators():
    x, w = _meta(8, 16, requires_grad=True), _meta(4, 16, requires_grad=True)
    q = _meta(2, 3, 10, 8)

    def ops():
        y = torch.nn.functional.linear(x, w)  # 2·8·16·4 forward
        torch.nn.functional.scaled_dot_product_attention(q, q, q)  # decomposed below the counter: its bmms count
        torch.nn.functional.linear(x, w).sum().backward()  # repeated forward, then two matmuls of backward
        return y

    with FlopCounterMode(display=False) as reference:
        ops()
    expected = reference.get_total_flops()
    first, again = MetaShapeCache(answers={}), None
    with first:
        ops()
    with MetaShapeCache(answers=first.answers) as again:
        ops()
    assert again.hits > 0 and again.misses < first.misses
    assert first.get_total_flops() == again.get_total_flops() == expected
    # by hand: two linear forwards and the backward's two matmuls, 2·8·16·4 each; attention's q·kᵀ and
    # weights·v over 2·3 heads, 2·10·8·10 each
    assert expected == 4 * (2 * 8 * 16 * 4) + 2 * (2 * 3) * (2 * 10 * 8 * 10)


def test_a_factory_without_a_dtype_follows_the_default_dtype_it_was_asked_under():
    cache = MetaShapeCache(answers={})
    with cache:
        first = torch.empty(2, 3, device="meta")
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            second = torch.empty(2, 3, device="meta")
        finally:
            torch.set_default_dtype(old)
    assert (first.dtype, second.dtype) == (torch.float32, torch.float64)
