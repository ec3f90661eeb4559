"""The Triton Markov refinement step against MarkovHead.step (vanilla, gated, RNN)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.spec_decode.heads import build_markov_head  # noqa: E402
from sparkserve_triton.markov import markov_step  # noqa: E402


@pytest.mark.parametrize("head_type,dtype", [("vanilla", torch.float32), ("gated", torch.float32),
                                             ("rnn", torch.float32), ("vanilla", torch.bfloat16)])
def test_markov_step_matches_head(device, head_type, dtype):
    torch.manual_seed(0)
    vocab, hidden_size, rank, num_rows = 200, 24, 20, 5
    head = build_markov_head(head_type, vocab, hidden_size, rank).to(device=device, dtype=dtype)
    base = torch.randn(num_rows, vocab, device=device, dtype=dtype)
    hidden = torch.randn(num_rows, hidden_size, device=device, dtype=dtype)
    state = ref_state = None
    with torch.no_grad():
        for step in range(2):  # the RNN head carries its state across steps
            prev = torch.randint(0, vocab, (num_rows,), device=device)
            expected, ref_state = head.step(base, hidden, prev, ref_state)
            z, state = markov_step(head, base, hidden, prev, state)
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(z, expected, atol=tol, rtol=tol)
            if ref_state is not None:
                torch.testing.assert_close(state, ref_state)
