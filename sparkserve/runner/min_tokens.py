"""``min_tokens``: until a request has that many output tokens, its stop tokens (``stop_token_ids`` and eos,
unless ``ignore_eos``) get probability 0 in the target's distribution, for plain sampling and for
verification alike (a verify block's row j is output index ``num_output_tokens + j``). The drafter's q is
left alone: a drafted stop token then meets p = 0 and is rejected, which keeps verification lossless
against the masked target. ``scheduler/stop.py`` checks the same rule from the other side."""
from __future__ import annotations

import torch

from sparkserve.step import StepPlan


def mask_early_stops(plan: StepPlan, sampled: list[int], logits: torch.Tensor) -> None:
    """In place: -inf at each stop id of every logits row [R, V] (rows ordered as ``spec_step.logit_rows``:
    l + 1 per sampled sequence) that would emit an output index below the request's ``min_tokens``."""
    row = 0
    for i in sampled:
        s = plan.seqs[i]
        meta, rows = s.sampling, s.num_draft_tokens + 1
        early = min(rows, meta.min_tokens - s.num_output_tokens)
        if early > 0 and meta.min_tokens_stop_ids:
            logits[row:row + early, list(meta.min_tokens_stop_ids)] = float("-inf")
        row += rows
