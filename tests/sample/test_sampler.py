"""Sampler: greedy rows, seeded reproducibility across batch compositions, masking, logprobs."""
from __future__ import annotations

import random

import pytest
import torch

from sparkserve.sample import RequestGenerators, Sampler, draw_from_probs, draw_uniform, draw_uniforms
from sparkserve.step import SamplingMeta

VOCAB = 32


def test_all_greedy_is_argmax_and_consumes_no_randomness():
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(0))
    logits[2, 5] = logits[2, 7] = logits[2].max() + 1.0  # tie -> lowest index
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    states = [g.get_state() for g in gens]
    metas = [SamplingMeta(temperature=0.0, top_k=3, top_p=0.5)] * 6
    out = Sampler().sample(logits, metas, gens)
    assert out.token_ids == logits.argmax(-1).tolist() and out.token_ids[2] == 5
    assert out.logprobs == [None] * 6
    assert all(torch.equal(g.get_state(), s) for g, s in zip(gens, states))
    assert Sampler().sample(logits, metas, [None] * 6).token_ids == out.token_ids


def test_mixed_batch_greedy_rows_are_argmax():
    logits = torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(1))
    metas = [SamplingMeta(temperature=0.0), SamplingMeta(), SamplingMeta(temperature=0.0),
             SamplingMeta(top_k=2), SamplingMeta(temperature=1e-6)]
    gens = [None, torch.Generator().manual_seed(1), None, torch.Generator().manual_seed(2), None]
    out = Sampler().sample(logits, metas, gens)
    argmax = logits.argmax(-1).tolist()
    assert [out.token_ids[i] for i in (0, 2, 4)] == [argmax[i] for i in (0, 2, 4)]
    assert out.token_ids[3] in torch.topk(logits[3], 2).indices.tolist()
    assert all(isinstance(t, int) for t in out.token_ids)


def test_bf16_logits():
    """bf16 logits: greedy is the argmax, logprobs are the raw log-softmax of the fp32 upcast, and the
    sampled rows respect their top-p / min-p sets."""
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    metas = [SamplingMeta(temperature=0.0), SamplingMeta(top_p=0.9, logprobs=2), SamplingMeta(min_p=0.1)]
    out = Sampler().sample(logits, metas, [None, torch.Generator().manual_seed(0), torch.Generator()])
    assert out.token_ids[0] == int(logits[0].argmax())
    raw = torch.log_softmax(logits.float(), -1)
    chosen, top = out.logprobs[1]
    assert chosen == pytest.approx(float(raw[1, out.token_ids[1]]), abs=1e-5)
    values, ids = torch.topk(raw[1], 2)
    assert [t for t, _ in top] == ids.tolist() and [lp for _, lp in top] == pytest.approx(values.tolist(), abs=1e-5)
    probs = raw.exp()
    order = probs[1].argsort(descending=True)
    nucleus = order[: int((probs[1][order].cumsum(0) < 0.9).sum()) + 1].tolist()  # smallest set with mass >= 0.9
    assert out.token_ids[1] in nucleus
    assert probs[2, out.token_ids[2]] >= 0.1 * probs[2].max()


def _run_steps(layouts, engine_seed, num_steps=60):
    """Drive a sampler over fixed per-request logits; layouts(step) -> row order of request ids."""
    metas = {
        "seeded": SamplingMeta(temperature=0.9, top_p=0.95, seed=1234),
        "other_seeded": SamplingMeta(temperature=1.2, top_k=5, seed=99),
        "unseeded": SamplingMeta(temperature=1.0),
        "greedy": SamplingMeta(temperature=0.0),
    }
    logits_of = {rid: torch.randn(VOCAB, generator=torch.Generator().manual_seed(i)) for i, rid in enumerate(metas)}
    gens = RequestGenerators(engine_seed=engine_seed)  # must not matter to a seeded request
    seen = []
    for step in range(num_steps):
        order = layouts(step)
        logits = torch.stack([logits_of[rid] for rid in order])
        out = Sampler().sample(logits, [metas[r] for r in order],
                               [gens.get(r, metas[r].seed) for r in order])
        seen.append(out.token_ids[order.index("seeded")])
    return seen


def test_seeded_request_independent_of_batch():
    alone = _run_steps(lambda step: ["seeded"], 0)
    assert len(set(alone)) > 3  # it really samples
    first = _run_steps(lambda step: ["seeded", "unseeded", "greedy", "other_seeded"], 1)
    last = _run_steps(lambda step: ["unseeded", "other_seeded", "greedy", "seeded"], 2)
    rng = random.Random(5)
    shuffled = _run_steps(lambda step: rng.sample(["seeded", "unseeded", "greedy", "other_seeded"], 4), 3)
    varying = _run_steps(lambda step: ["greedy", "seeded"] if step % 2 else ["seeded", "unseeded"], 4)
    assert alone == first == last == shuffled == varying


def test_masked_tokens_never_sampled():
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(3))
    logits[::3] = float("-inf")  # e.g. masked by a logits processor
    gen = torch.Generator().manual_seed(4)
    rows = 400
    metas = [SamplingMeta(temperature=2.0, top_k=8)] * rows
    out = Sampler().sample(logits.expand(rows, VOCAB), metas, [gen] * rows)
    allowed = set(torch.topk(logits, 8).indices.tolist())
    assert set(out.token_ids) <= allowed and len(set(out.token_ids)) > 1


def test_logprobs_raw_convention():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(5))
    metas = [SamplingMeta(temperature=0.0, logprobs=5), SamplingMeta(temperature=0.7, top_k=3, logprobs=0),
             SamplingMeta(temperature=1.0), SamplingMeta(temperature=0.5, top_p=0.5, logprobs=20)]
    gens = [None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), torch.Generator()]
    out = Sampler().sample(logits, metas, gens)
    raw = torch.log_softmax(logits, -1)
    assert out.logprobs[2] is None
    for row in (0, 1, 3):
        chosen, top = out.logprobs[row]
        assert chosen == pytest.approx(float(raw[row, out.token_ids[row]]), abs=1e-6)
        assert len(top) == metas[row].logprobs
        values, ids = torch.topk(raw[row], metas[row].logprobs)
        assert [t for t, _ in top] == ids.tolist()
        assert [lp for _, lp in top] == pytest.approx(values.tolist(), abs=1e-6)
        assert all(isinstance(t, int) and isinstance(lp, float) for t, lp in top)
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert out.logprobs[0][0] == pytest.approx(float(raw[0].max()), abs=1e-6)
    assert out.logprobs[1][1] == []


def test_logprobs_count_capped_by_vocab():
    logits = torch.randn(1, 4, generator=torch.Generator().manual_seed(9))
    out = Sampler().sample(logits, [SamplingMeta(temperature=0.0, logprobs=20)], [None])
    raw = torch.log_softmax(logits[0], -1)
    values, ids = torch.sort(raw, descending=True)  # all 4 tokens, best first
    assert [t for t, _ in out.logprobs[0][1]] == ids.tolist()
    assert [lp for _, lp in out.logprobs[0][1]] == pytest.approx(values.tolist(), abs=1e-6)


def test_row_count_mismatch_raises():
    with pytest.raises(ValueError):
        Sampler().sample(torch.zeros(2, 4), [SamplingMeta()], [None, None])


def test_draw_from_probs_unnormalised_and_zero_weights():
    gen = torch.Generator().manual_seed(6)
    weights = torch.tensor([0.0, 3.0, 0.0, 1.0, 0.0])
    draws = [draw_from_probs(weights, gen) for _ in range(400)]
    assert set(draws) == {1, 3}
    assert 0.65 < draws.count(1) / 400 < 0.85
    assert draw_from_probs(torch.tensor([0.0, 0.0, 1e-30]), gen) == 2


def test_draw_from_probs_consumes_one_double_per_draw():
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    probs = torch.softmax(torch.randn(VOCAB), -1)
    draw_from_probs(probs, a)
    torch.rand(1, dtype=torch.float64, generator=b)
    assert torch.equal(a.get_state(), b.get_state())


def test_draw_uniform():
    a, b = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    us = [draw_uniform(a) for _ in range(200)]
    assert all(0.0 <= u < 1.0 for u in us) and isinstance(us[0], float)
    assert us[:5] == [draw_uniform(b) for _ in range(5)]
    many = draw_uniforms(torch.Generator().manual_seed(8), 200)
    assert many.shape == (200,) and many.dtype == torch.float32
    assert 0.4 < float(many.mean()) < 0.6


def test_draw_indices_inverse_cdf_edges():
    """Zero weights are never drawn (also at either end), unnormalised weights are fine, rows use
    their own generators."""
    from sparkserve.sample import draw_indices

    w = torch.tensor([[0.0, 2.0, 0.0, 6.0, 0.0], [5.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    counts = torch.zeros(3, 5)
    for seed in range(2000):
        gens = [torch.Generator().manual_seed(seed * 3 + r) for r in range(3)]
        idx = draw_indices(w, gens)
        counts[torch.arange(3), idx] += 1
    assert counts[w == 0].sum() == 0
    assert counts[1, 0] == counts[2, 4] == 2000
    assert abs(counts[0, 3] / 2000 - 0.75) < 0.04
