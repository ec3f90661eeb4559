"""verify(): greedy rules, the documented randomness order, reproducibility, logprobs, errors.

The statistical (losslessness) tests live in test_verify_distribution.py.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkserve.sample import Sampler, SamplingTensors, draw_uniforms, processed_logprobs, draw_index
from sparkserve.spec_decode.types import DraftBlock
from sparkserve.spec_decode.verify import VerifyInput, VerifyOutput, verify
from sparkserve.step import SamplingMeta

VOCAB = 10
GREEDY = SamplingMeta(temperature=0.0)




def _logits(num_rows: int, seed: int, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randn(num_rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2.0  # [rows, V]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_q(num_rows: int, seed: int, vocab: int = VOCAB) -> torch.Tensor:
    """Draft distributions [rows, V] with some exact zeros."""
    g = _gen(seed)
    q = torch.rand(num_rows, vocab, generator=g) ** 2
    q[torch.rand(num_rows, vocab, generator=g) < 0.3] = 0.0
    q[:, 0] += 0.05  # never all zero
    return q / q.sum(-1, keepdim=True)


def _probs(rows: torch.Tensor, meta: SamplingMeta) -> torch.Tensor:
    return processed_logprobs(rows, *SamplingTensors.from_metas([meta] * rows.shape[0])).exp()  # [rows, V]


# ---------------------------------------------------------------------------------------------- greedy


def test_greedy_accepts_longest_argmax_prefix_then_emits_argmax():
    logits = _logits(5, seed=0)  # [anchor, d1..d4]
    argmax = logits.argmax(-1).tolist()
    drafts = [argmax[0], argmax[1], (argmax[2] + 1) % VOCAB, argmax[3]]  # mismatch at d3
    gen = _gen(1)
    state = gen.get_state()
    (out,) = verify(logits, [VerifyInput(drafts, _random_q(4, 2), GREEDY, gen)])
    assert out.num_accepted == 2
    assert out.token_ids == [argmax[0], argmax[1], argmax[2]]
    assert out.logprobs is None
    assert torch.equal(gen.get_state(), state), "greedy consumed randomness"


def test_greedy_all_accepted_emits_bonus_argmax_and_l0_is_argmax():
    logits = _logits(4, seed=3)
    argmax = logits.argmax(-1).tolist()
    out = verify(logits, [VerifyInput(argmax[:3], None, GREEDY, None)])
    assert out[0].num_accepted == 3 and out[0].token_ids == argmax
    rows = _logits(1, seed=4)
    (plain,) = verify(rows, [VerifyInput([], None, GREEDY, None)])
    assert plain.token_ids == [int(rows.argmax())] and plain.num_accepted == 0


def test_greedy_ties_go_to_lowest_index_and_filters_are_ignored():
    logits = _logits(3, seed=5)
    logits[0, 2] = logits[0, 6] = logits[0].max() + 1.0  # tie: argmax is 2
    logits[1, 4] = logits[1, 8] = logits[1].max() + 1.0  # tie: argmax is 4
    meta = SamplingMeta(temperature=1e-6, top_k=1, top_p=0.1, min_p=0.9)
    (rejected,) = verify(logits, [VerifyInput([6, 4], None, meta, None)])
    assert rejected.num_accepted == 0 and rejected.token_ids == [2]
    (accepted,) = verify(logits, [VerifyInput([2, 4], None, meta, None)])
    assert accepted.num_accepted == 2 and accepted.token_ids == [2, 4, int(logits[2].argmax())]


def test_greedy_and_stochastic_requests_mix_in_one_batch():
    logits = _logits(2 + 3 + 1, seed=6)
    argmax = logits.argmax(-1).tolist()
    inputs = [VerifyInput([argmax[0]], None, GREEDY, None),
              VerifyInput([1, 2], _random_q(2, 7), SamplingMeta(temperature=0.8), _gen(8)),
              VerifyInput([], None, GREEDY, None)]
    outs = verify(logits, inputs)
    assert outs[0].token_ids == argmax[0:2] and outs[2].token_ids == [argmax[5]]
    assert 1 <= len(outs[1].token_ids) <= 3


# ---------------------------------------------------------------------------- the randomness contract


def _reference(rows: torch.Tensor, inp: VerifyInput) -> VerifyOutput:
    """One request, written straight from the module docstring (slow, obviously correct)."""
    num_drafts = inp.num_draft_tokens
    if inp.is_greedy:
        argmax = rows.argmax(-1).tolist()
        a = 0
        while a < num_drafts and inp.draft_token_ids[a] == argmax[a]:
            a += 1
        return VerifyOutput(inp.draft_token_ids[:a] + [argmax[a]], a)
    p = _probs(rows, inp.sampling)  # [l + 1, V]
    u = draw_uniforms(inp.generator, num_drafts).tolist()
    for k, d in enumerate(inp.draft_token_ids):
        if inp.draft_probs is None:
            q = torch.zeros(rows.shape[1])
            q[d] = 1.0
        else:
            q = inp.draft_probs[k].float()
        if q[d] > 0 and u[k] * float(q[d]) < float(p[k, d]):
            continue
        residual = (p[k] - q).clamp_min(0.0)
        weights = residual if residual.sum() > 0 else p[k]
        return VerifyOutput(inp.draft_token_ids[:k] + [int(draw_index(weights, inp.generator))], k)
    return VerifyOutput(inp.draft_token_ids + [int(draw_index(p[num_drafts], inp.generator))], num_drafts)


_meta_strategy = st.builds(
    SamplingMeta,
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
    top_k=st.sampled_from([0, 2, 5]),
    top_p=st.sampled_from([1.0, 0.9, 0.6]),
    min_p=st.sampled_from([0.0, 0.1]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(
        st.tuples(st.integers(0, 4), _meta_strategy, st.booleans(), st.integers(0, 2**31)), min_size=1, max_size=5),
    vocab=st.integers(3, 9),
    data_seed=st.integers(0, 10_000),
)
def test_matches_per_request_reference(requests, vocab, data_seed):
    """Same tokens as the reference, for ragged batches, all modes, every seed hypothesis picks."""
    g = _gen(data_seed)
    num_rows = sum(n + 1 for n, *_ in requests)
    logits = torch.randn(num_rows, vocab, generator=g) * 2.0
    inputs, ref_inputs = [], []
    for n, meta, deterministic, seed in requests:
        drafts = torch.randint(0, vocab, (n,), generator=g).tolist()
        q = None if deterministic else _random_q(n, seed % 1000, vocab)
        inputs.append(VerifyInput(drafts, q, meta, _gen(seed)))
        ref_inputs.append(VerifyInput(drafts, q, meta, _gen(seed)))
    outs = verify(logits, inputs)
    start = 0
    for out, inp, ref_inp in zip(outs, inputs, ref_inputs):
        ref = _reference(logits[start:start + inp.num_draft_tokens + 1], ref_inp)
        assert (out.token_ids, out.num_accepted) == (ref.token_ids, ref.num_accepted)
        assert torch.equal(inp.generator.get_state(), ref_inp.generator.get_state())
        start += inp.num_draft_tokens + 1


@pytest.mark.parametrize("deterministic", [False, True])
def test_randomness_consumed_is_fixed_by_verify_length(deterministic):
    """l uniforms then one fp64 uniform (the final token's inverse-CDF draw), whatever is accepted."""
    num_drafts = 3
    seen_accepts = set()
    for seed in range(25):
        logits = _logits(num_drafts + 1, seed=100 + seed)
        q = None if deterministic else _random_q(num_drafts, seed)
        drafts = [seed % VOCAB, (seed * 3) % VOCAB, 1]
        gen, twin = _gen(seed), _gen(seed)
        (out,) = verify(logits, [VerifyInput(drafts, q, SamplingMeta(), gen)])
        seen_accepts.add(out.num_accepted)
        draw_uniforms(twin, num_drafts)
        torch.rand(1, dtype=torch.float64, generator=twin)
        assert torch.equal(gen.get_state(), twin.get_state())
    assert len(seen_accepts) >= 2  # the claim was exercised on different outcomes


@pytest.mark.parametrize("meta", [SamplingMeta(), SamplingMeta(temperature=0.7, top_k=4, top_p=0.9),
                                  SamplingMeta(temperature=1.3, min_p=0.1, logprobs=3), GREEDY])
def test_l0_is_exactly_plain_sampling(meta):
    logits = _logits(6, seed=11)
    for row in range(6):
        gen, twin = _gen(row), _gen(row)
        expected = Sampler().sample(logits[row:row + 1], [meta], [twin])
        # a batch-mate before it must not change anything
        mate = VerifyInput([3], _random_q(1, row), SamplingMeta(), _gen(99))
        rows = torch.cat([_logits(2, seed=12), logits[row:row + 1]])
        outs = verify(rows, [mate, VerifyInput([], None, meta, gen)])
        assert outs[1].token_ids == expected.token_ids and outs[1].num_accepted == 0
        assert outs[1].logprobs == (None if meta.logprobs is None else expected.logprobs)
        assert torch.equal(gen.get_state(), twin.get_state())


# ---------------------------------------------------------------------------------- reproducibility


def _batch(seeds: dict[str, int]) -> list[tuple[str, torch.Tensor, VerifyInput]]:
    """Named requests with their own logits rows, generators seeded from ``seeds``."""
    specs = {
        "a": ([1, 2, 3], _random_q(3, 1), SamplingMeta(temperature=0.9)),
        "b": ([4], None, SamplingMeta(top_p=0.8)),
        "c": ([], None, SamplingMeta(temperature=1.2, top_k=5)),
        "d": ([5, 5], None, GREEDY),
        "e": ([0, 7, 2, 9], _random_q(4, 2), SamplingMeta(min_p=0.05)),
    }
    out = []
    for i, (name, (drafts, q, meta)) in enumerate(specs.items()):
        out.append((name, _logits(len(drafts) + 1, seed=50 + i), VerifyInput(drafts, q, meta, _gen(seeds[name]))))
    return out


def _run(named, order):
    chosen = [named[i] for i in order]
    outs = verify(torch.cat([rows for _, rows, _ in chosen]), [inp for *_, inp in chosen])
    return {name: (o.token_ids, o.num_accepted) for (name, *_), o in zip(chosen, outs)}


def test_seeded_runs_repeat_and_ignore_batch_mates():
    seeds = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    full = _run(_batch(seeds), [0, 1, 2, 3, 4])
    assert full == _run(_batch(seeds), [0, 1, 2, 3, 4])
    for order in ([4], [0], [3, 0], [2, 4, 1], [4, 3, 2, 1, 0]):
        got = _run(_batch(seeds), order)
        assert all(got[name] == full[name] for name in got)
    # different seeds do change some stochastic outcome (the generators are really used)
    runs = [_run(_batch({k: v + 10 * s for k, v in seeds.items()}), [0, 1, 2, 3, 4]) for s in range(1, 6)]
    assert any(r != full for r in runs)


def test_draft_equal_to_target_is_always_accepted():
    meta = SamplingMeta(temperature=0.9, top_k=6, top_p=0.95)
    for seed in range(30):
        logits = _logits(5, seed=200 + seed)
        p = _probs(logits, meta)  # [5, V]; q == p on the draft rows
        drafts = [int(draw_index(p[k], _gen(seed * 7 + k))) for k in range(4)]
        (out,) = verify(logits, [VerifyInput(drafts, p[:4].clone(), meta, _gen(seed))])
        assert out.num_accepted == 4 and out.token_ids[:4] == drafts


def test_zero_draft_probability_is_rejected_and_falls_back_to_p():
    logits = torch.full((2, 6), -2.0)
    logits[0, 1:] = torch.arange(5.0)  # p(0) > 0 but tiny
    q = torch.zeros(1, 6)
    q[0, 3] = 1.0  # q(0) = 0: the drafter broke its contract
    for seed in range(20):
        (out,) = verify(logits, [VerifyInput([0], q, SamplingMeta(), _gen(seed))])
        assert out.num_accepted == 0 and out.token_ids[0] != 3  # residual max(p - q, 0) has q's mass removed
    # p == q with the draft outside both supports: residual is all zero -> sample p, never token 0
    logits = torch.tensor([[float("-inf"), 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    p = _probs(logits[:1], SamplingMeta())
    for seed in range(20):
        (out,) = verify(logits, [VerifyInput([0], p.clone(), SamplingMeta(), _gen(seed))])
        assert out.num_accepted == 0 and out.token_ids[0] in (1, 2, 3)


# --------------------------------------------------------------------------------------- logprobs


@pytest.mark.parametrize("meta", [SamplingMeta(temperature=0.7, top_k=3, logprobs=4), SamplingMeta(
    temperature=0.0, logprobs=0)])
def test_logprobs_are_raw_log_softmax_of_each_emitting_row(meta):
    logits = _logits(1 + 5 + 3, seed=21)  # requests own rows 0, 1..5, 6..8
    argmax = logits.argmax(-1).tolist()
    inputs = [VerifyInput([], None, SamplingMeta(), _gen(0)),  # no logprobs asked
              VerifyInput(argmax[1:4] + [(argmax[4] + 1) % VOCAB], None, meta, _gen(1)),
              VerifyInput(argmax[6:8], None, meta, _gen(2))]
    outs = verify(logits, inputs)
    assert outs[0].logprobs is None
    raw = torch.log_softmax(logits.float(), dim=-1)
    for out, start in ((outs[1], 1), (outs[2], 6)):
        assert len(out.logprobs) == len(out.token_ids)
        for j, (tok, (chosen, top)) in enumerate(zip(out.token_ids, out.logprobs)):
            row = raw[start + j]
            assert chosen == pytest.approx(float(row[tok]), abs=1e-6)
            top_vals, top_ids = row.topk(meta.logprobs)
            assert [t for t, _ in top] == top_ids.tolist()
            assert [v for _, v in top] == pytest.approx(top_vals.tolist(), abs=1e-6)
    if meta.temperature == 0.0:
        assert outs[1].num_accepted == 3 and outs[2].num_accepted == 2


# ------------------------------------------------------------------------------------ API details


def test_from_draft_block_truncates_to_verify_length():
    block = DraftBlock(token_ids=[4, 5, 6], probs=_random_q(3, 0), confidences=[0.9, 0.5, 0.1])
    inp = VerifyInput.from_draft_block(block, 2, SamplingMeta(), None)
    assert inp.draft_token_ids == [4, 5] and inp.draft_probs.shape == (2, VOCAB)
    assert VerifyInput.from_draft_block(DraftBlock([1, 2]), 0, GREEDY, None).draft_token_ids == []
    with pytest.raises(ValueError):
        VerifyInput.from_draft_block(block, 4, SamplingMeta(), None)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="target_logits"):
        verify(_logits(2, 0), [VerifyInput([1, 2], None, GREEDY, None)])
    with pytest.raises(ValueError, match="draft_probs"):
        verify(_logits(3, 0), [VerifyInput([1, 2], _random_q(1, 0), SamplingMeta(), None)])
    with pytest.raises(ValueError, match="draft token id"):
        verify(_logits(2, 0), [VerifyInput([VOCAB], None, SamplingMeta(), None)])
    assert verify(torch.empty(0, VOCAB), []) == []


def test_bf16_inputs():
    logits = _logits(3, seed=30).bfloat16()
    (out,) = verify(logits, [VerifyInput([1, 2], _random_q(2, 3).bfloat16(), SamplingMeta(), _gen(0))])
    assert 1 <= len(out.token_ids) <= 3 and all(isinstance(t, int) for t in out.token_ids)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_contracts():
    logits = _logits(4, seed=40)
    argmax = logits.argmax(-1).tolist()
    (greedy,) = verify(logits.cuda(), [VerifyInput(argmax[:2] + [0], None, GREEDY, None)])
    assert greedy.token_ids[:2] == argmax[:2]
    meta = SamplingMeta(temperature=0.8, top_p=0.9)
    gen, twin = torch.Generator("cuda").manual_seed(1), torch.Generator("cuda").manual_seed(1)
    (plain,) = verify(logits[:1].cuda(), [VerifyInput([], None, meta, gen)])
    assert plain.token_ids == Sampler().sample(logits[:1].cuda(), [meta], [twin]).token_ids
    (spec,) = verify(logits.cuda(), [VerifyInput([1, 2, 3], _random_q(3, 0).cuda(), meta, gen)])
    assert 1 <= len(spec.token_ids) <= 4
