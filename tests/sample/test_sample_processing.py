"""processed_logprobs: the processed distribution against an independent reference, and its edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkserve.sample import SamplingTensors, processed_logprobs
from sparkserve.step import SamplingMeta

NEG_INF = float("-inf")


def run(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """Single-row convenience: returns fp32 logprobs [V]."""
    logits = torch.as_tensor(logits, dtype=torch.float32)[None]
    out = processed_logprobs(
        logits,
        torch.tensor([temperature]),
        torch.tensor([top_k]),
        torch.tensor([top_p]),
        torch.tensor([min_p]),
    )
    assert out.shape == logits.shape and out.dtype == torch.float32
    return out[0]


def support(logprobs: torch.Tensor) -> set[int]:
    return set(torch.nonzero(logprobs > NEG_INF).squeeze(1).tolist())


def logits_of(probs) -> list[float]:
    return [math.log(p) if p > 0 else NEG_INF for p in probs]


CONFIGS = [  # (temperature, top_k, top_p, min_p)
    (1.0, 0, 1.0, 0.0),
    (0.7, 0, 1.0, 0.0),
    (1.0, 3, 1.0, 0.0),
    (1.0, 0, 0.8, 0.0),
    (1.0, 0, 1.0, 0.2),
    (0.7, 3, 0.8, 0.0),
    (1.3, 5, 0.9, 0.1),
    (0.7, 0, 0.8, 0.2),
    (0.5, 6, 0.95, 0.05),
    (2.0, 10, 0.5, 0.0),
    (0.0, 3, 0.8, 0.2),
]


def test_matches_reference_mixed_batch(ref_dist):
    gen = torch.Generator().manual_seed(0)
    vocab, reps = 16, 6
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m) for (t, k, p, m) in CONFIGS] * reps
    logits = torch.randn(len(metas), vocab, generator=gen) * 2.0  # [N, V]
    out = processed_logprobs(logits, *SamplingTensors.from_metas(metas))  # [N, V]
    for row, meta in enumerate(metas):
        ref = ref_dist(logits[row].tolist(), meta.temperature, meta.top_k, meta.top_p, meta.min_p)
        got = out[row].exp().double().numpy()
        assert support(out[row]) == set(np.nonzero(ref)[0].tolist()), (row, meta)
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-5)
        assert abs(got.sum() - 1.0) < 1e-5


def test_rows_do_not_interact():
    gen = torch.Generator().manual_seed(1)
    metas = [SamplingMeta(temperature=t, top_k=k, top_p=p, min_p=m) for (t, k, p, m) in CONFIGS]
    logits = torch.randn(len(metas), 32, generator=gen)
    batch = processed_logprobs(logits, *SamplingTensors.from_metas(metas))
    for row, meta in enumerate(metas):
        alone = processed_logprobs(logits[row : row + 1], *SamplingTensors.from_metas([meta]))
        assert torch.equal(batch[row], alone[0])


def test_greedy_one_hot_lowest_index_on_ties():
    out = run([1.0, 3.0, 0.5, 3.0], temperature=0.0, top_k=1, top_p=0.1, min_p=0.5)
    assert out.tolist() == [NEG_INF, 0.0, NEG_INF, NEG_INF]
    bf16 = processed_logprobs(
        torch.tensor([[0.0, 2.0, 2.0]], dtype=torch.bfloat16),
        torch.zeros(1), torch.zeros(1, dtype=torch.long), torch.ones(1), torch.zeros(1),
    )
    assert bf16.dtype == torch.float32 and bf16[0].tolist() == [NEG_INF, 0.0, NEG_INF]


def test_no_filter_is_tempered_softmax():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0])
    torch.testing.assert_close(run(logits, temperature=0.5), torch.log_softmax(logits / 0.5, -1))


def test_input_logits_not_modified():
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    before = logits.clone()
    processed_logprobs(logits, torch.tensor([1.0, 0.0, 0.8]), torch.tensor([2, 0, 3]),
                       torch.tensor([0.5, 1.0, 0.9]), torch.tensor([0.1, 0.0, 0.3]))
    assert torch.equal(logits, before)


# ---- top-k ---------------------------------------------------------------------------------------

def test_top_k_off_values_and_ties():
    logits = [4.0, 1.0, 3.0, 2.0, 0.0]
    assert support(run(logits, top_k=0)) == {0, 1, 2, 3, 4}
    assert support(run(logits, top_k=-1)) == {0, 1, 2, 3, 4}
    assert support(run(logits, top_k=5)) == {0, 1, 2, 3, 4}
    assert support(run(logits, top_k=99)) == {0, 1, 2, 3, 4}
    assert support(run(logits, top_k=1)) == {0}
    assert support(run(logits, top_k=2)) == {0, 2}
    # ties with the k-th value are kept, whatever their position
    assert support(run([1.0, 2.0, 1.0, 0.0], top_k=2)) == {0, 1, 2}


# ---- top-p ---------------------------------------------------------------------------------------

def test_top_p_one_keeps_everything():
    probs = [0.5, 0.3, 0.15, 0.05, 1e-6]
    assert support(run(logits_of(probs), top_p=1.0)) == {0, 1, 2, 3, 4}


def test_top_p_smallest_set_reaching_p():
    probs = [0.1, 0.5, 0.25, 0.125, 0.025]
    assert support(run(logits_of(probs), top_p=0.5)) == {1}  # a single token reaching p exactly
    assert support(run(logits_of(probs), top_p=0.4)) == {1}
    assert support(run(logits_of(probs), top_p=0.51)) == {1, 2}
    assert support(run(logits_of(probs), top_p=0.75)) == {1, 2}  # exact boundary
    assert support(run(logits_of(probs), top_p=0.76)) == {1, 2, 3}
    assert support(run(logits_of(probs), top_p=0.875)) == {1, 2, 3}
    assert support(run(logits_of(probs), top_p=0.9)) == {0, 1, 2, 3}
    assert support(run(logits_of(probs), top_p=1e-9)) == {1}  # tiny p still keeps the top token
    out = run(logits_of(probs), top_p=0.76).exp()
    torch.testing.assert_close(out, torch.tensor([0, 0.5, 0.25, 0.125, 0]) / 0.875)


def test_top_p_ties_at_boundary_are_kept():
    probs = [0.4, 0.2, 0.2, 0.2]
    assert support(run(logits_of(probs), top_p=0.5)) == {0, 1, 2, 3}
    assert support(run(logits_of(probs), top_p=0.4)) == {0}
    uniform = [0.0] * 6
    assert support(run(uniform, top_p=0.1)) == set(range(6))


def test_top_p_applies_after_top_k_renormalisation():
    probs = [0.4, 0.3, 0.2, 0.1]
    # top-k 2 leaves {0: 4/7, 1: 3/7}; p = 0.5 is reached by token 0 alone
    assert support(run(logits_of(probs), top_k=2, top_p=0.5)) == {0}
    # without top-k, 0.4 < 0.5 so two tokens are needed
    assert support(run(logits_of(probs), top_p=0.5)) == {0, 1}


def test_top_p_after_temperature():
    probs = [0.6, 0.3, 0.1]
    # T = 0.5 squares then renormalises: [0.36, 0.09, 0.01] / 0.46 -> 0.7826 for token 0
    assert support(run(logits_of(probs), temperature=0.5, top_p=0.75)) == {0}
    assert support(run(logits_of(probs), temperature=1.0, top_p=0.75)) == {0, 1}


# ---- min-p ---------------------------------------------------------------------------------------

def test_min_p():
    probs = [0.5, 0.3, 0.11, 0.09]
    assert support(run(logits_of(probs), min_p=0.2)) == {0, 1, 2}  # 0.11 >= 0.1 > 0.09
    assert support(run(logits_of(probs), min_p=0.0)) == {0, 1, 2, 3}
    assert support(run(logits_of(probs), min_p=1.0)) == {0}
    assert support(run([1.0, 1.0, 0.0], min_p=1.0)) == {0, 1}


def test_min_p_after_top_p():
    probs = [0.5, 0.3, 0.11, 0.09]
    assert support(run(logits_of(probs), top_p=0.95)) == {0, 1, 2, 3}
    assert support(run(logits_of(probs), top_p=0.95, min_p=0.2)) == {0, 1, 2}
    assert support(run(logits_of(probs), top_p=0.75, min_p=0.2)) == {0, 1}


def test_existing_neg_inf_logits_stay_masked():
    logits = [0.0, NEG_INF, 1.0, NEG_INF]
    for t, k, p, m in [(1.0, 0, 1.0, 0.0), (0.5, 3, 0.99, 0.01), (2.0, 0, 0.999, 0.0)]:
        assert support(run(logits, t, k, p, m)) <= {0, 2}


# ---- properties ----------------------------------------------------------------------------------

row_strategy = st.tuples(
    st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=12),
    st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.5]),
    st.integers(-1, 13),
    st.sampled_from([0.05, 0.3, 0.5, 0.8, 0.95, 1.0]),
    st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(row_strategy)
def test_properties(row):
    logits, t, k, p, m = row
    out = run(logits, t, k, p, m)
    z = torch.tensor(logits, dtype=torch.float32)
    kept = out > NEG_INF
    # normalised, the argmax always survives, the kept set is an upper set of the logits
    assert abs(float(torch.logsumexp(out, 0))) < 1e-5
    assert bool(kept[int(z.argmax())])
    if t == 0.0:  # one-hot at the first argmax, even among ties
        assert int(kept.sum()) == 1
        return
    if bool((~kept).any()):
        assert float(z[kept].min()) > float(z[~kept].max())
    if 0 < k < len(logits):
        assert int(kept.sum()) >= k or p < 1.0 or m > 0.0
        kth = float(torch.sort(z, descending=True).values[k - 1])
        assert bool((z[kept] >= kth).all())
    if p < 1.0:
        # the top-p set (before min-p) reaches p on the top-k renormalised distribution
        base = run(logits, t, k, 1.0, 0.0).exp()
        p_set = run(logits, t, k, p, 0.0) > NEG_INF
        assert float(base[p_set].sum()) >= p - 2e-6
        smallest = base[p_set].min()
        without_last_group = p_set & (base > smallest)
        assert float(base[without_last_group].sum()) < p + 2e-6
    if m > 0.0:
        probs = out.exp()
        assert bool((probs[kept] >= m * probs.max() * (1 - 1e-5)).all())


def test_all_greedy_skips_processing():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(3))
    out = processed_logprobs(logits, torch.zeros(4), torch.full((4,), 3), torch.full((4,), 0.5), torch.full((4,), 0.5))
    assert torch.equal(out.argmax(-1), logits.argmax(-1))
    assert torch.equal((out == 0).sum(-1), torch.ones(4, dtype=torch.long))


@pytest.mark.parametrize("repeats", [[1, 3, 2], [0, 2, 1]])
def test_sampling_tensors_repeats(repeats):
    metas = [SamplingMeta(temperature=0.5), SamplingMeta(top_k=4), SamplingMeta(top_p=0.9, min_p=0.1)]
    t = SamplingTensors.from_metas(metas, repeats=repeats)
    assert t.temperature.shape == (sum(repeats),)
    expected = [m.top_k for m, r in zip(metas, repeats) for _ in range(r)]
    assert t.top_k.tolist() == expected and t.top_k.dtype == torch.int64
    with pytest.raises(ValueError):
        SamplingTensors.from_metas(metas, repeats=[1])


def test_top_k_top_p_fast_path_matches_full_sort(ref_dist):
    """With a top-k on every row, top-p sorts only the top-k head (ties with the k-th included)."""
    gen = torch.Generator().manual_seed(3)
    vocab = 64
    logits = torch.randn(8, vocab, generator=gen)
    logits[:4, 10:20] = 3.0  # ten-way tie straddling k = 4 and k = 12: the head must grow to the tie
    metas = [SamplingMeta(temperature=0.7, top_k=k, top_p=p) for k, p in
             [(4, 0.8), (12, 0.9), (4, 0.3), (12, 0.99), (20, 0.8), (1, 0.5), (5, 0.95), (63, 0.6)]]
    fast = processed_logprobs(logits, *SamplingTensors.from_metas(metas))  # every row has a top-k
    mixed = metas + [SamplingMeta(temperature=0.7, top_p=0.8)]  # one row without: the full sort
    full = processed_logprobs(torch.cat([logits, logits[:1]]), *SamplingTensors.from_metas(mixed))[:8]
    for row, meta in enumerate(metas):
        assert support(fast[row]) == support(full[row]), meta
        ref = ref_dist(logits[row].tolist(), meta.temperature, meta.top_k, meta.top_p, meta.min_p)
        np.testing.assert_allclose(fast[row].exp().double().numpy(), ref, atol=2e-6, rtol=1e-5)
