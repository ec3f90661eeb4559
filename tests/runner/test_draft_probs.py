"""The runner's draft state: q per request, paired with the scheduler's drafts by construction."""
import pytest
import torch

from sparkserve.runner.draft_probs import DraftProbs

V = 6


def test_q_prefix_pairs_with_the_verified_drafts():
    store, q = DraftProbs(), torch.softmax(torch.randn(3, V, generator=torch.Generator().manual_seed(0)), -1)
    store.store("a", q)
    assert torch.equal(store.for_verify("a", 2), q[:2]) and torch.equal(store.for_verify("a", 3), q)
    assert store.for_verify("a", 0) is None and store.for_verify("b", 2) is None  # unknown: one-hot q
    with pytest.raises(RuntimeError, match="disagree"):
        store.for_verify("a", 4)


def test_a_deterministic_block_replaces_a_stale_q_and_finished_requests_drop():
    store = DraftProbs()
    store.store("a", torch.full((2, V), 1 / V))
    store.store("b", torch.full((2, V), 1 / V))
    store.store("a", None)  # the newest block of "a" was drawn greedily
    assert store.for_verify("a", 1) is None and len(store) == 1
    store.drop(["b", "never-seen"])
    assert len(store) == 0
