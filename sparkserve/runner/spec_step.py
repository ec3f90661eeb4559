"""The speculative half of a runner step: verify each sequence's draft block, then ask the drafter
for the next one. Sequences without drafts go through the same verifier with l = 0, which samples
exactly like the plain sampler."""
from __future__ import annotations

import torch

from sparkserve.runner.draft_probs import DraftProbs
from sparkserve.runner.input_batch import FlatBatch
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.spec_decode.verify import VerifyInput, verify
from sparkserve.step import SeqResult, StepPlan


def logit_rows(plan: StepPlan, batch: FlatBatch) -> tuple[list[int], list[int]]:
    """(flat rows whose logits are needed, index of each sampled sequence). A sampled sequence with
    l drafts needs its last l + 1 rows: [anchor, d1..dl]."""
    rows, sampled = [], []
    for i, s in enumerate(plan.seqs):
        if s.sample:
            end = batch.query_start[i + 1]
            rows.extend(range(end - 1 - s.num_draft_tokens, end))
            sampled.append(i)
    return rows, sampled


def verify_step(plan: StepPlan, sampled: list[int], logits: torch.Tensor, draft_probs: DraftProbs,
                generators, results: list[SeqResult]) -> None:
    """Lossless verification of every sampled sequence (its ``draft_token_ids`` against q from
    ``draft_probs``); fills ``results`` in place."""
    inputs = []
    for i in sampled:
        s = plan.seqs[i]
        q = draft_probs.for_verify(s.request_id, s.num_draft_tokens)
        gen = None if s.sampling.temperature == 0 else generators.get(s.request_id, s.sampling.seed)
        inputs.append(VerifyInput(s.draft_token_ids, q, s.sampling, gen))
    for i, out in zip(sampled, verify(logits, inputs)):
        results[i].new_token_ids = out.token_ids
        results[i].num_accepted_drafts = out.num_accepted
        results[i].logprobs = out.logprobs


def next_token_ids(plan: StepPlan, batch: FlatBatch, results: list[SeqResult]) -> torch.Tensor:
    """[num_tokens]: the committed token at each row's position + 1, or -1 where unknown or stale."""
    out = [-1] * len(batch.slot_mapping)
    for i, s in enumerate(plan.seqs):
        start = batch.query_start[i]
        known = s.num_known_tokens
        res = results[i]
        committed = s.token_ids[1:known] + res.new_token_ids  # accepted drafts are new_token_ids[:-1]
        for j, tok in enumerate(committed[: known + res.num_accepted_drafts]):
            out[start + j] = tok
    return torch.tensor(out, dtype=torch.long, device=batch.slot_mapping.device)


def propose_requests(plan: StepPlan, sampled: list[int], results: list[SeqResult], gamma: int,
                     generators) -> list[tuple[int, ProposeRequest]]:
    """One ProposeRequest per sampled sequence that still wants drafts."""
    reqs = []
    for i in sampled:
        s, res = plan.seqs[i], results[i]
        cap = gamma if s.max_draft_tokens is None else min(gamma, s.max_draft_tokens)
        if cap <= 0 or not res.new_token_ids:
            continue
        anchor_pos = s.num_computed_tokens + s.num_known_tokens + res.num_accepted_drafts
        history = None
        if s.history_token_ids is not None:
            history = s.history_token_ids + res.new_token_ids
        gen = None if s.sampling.temperature == 0 else generators.get(s.request_id, s.sampling.seed)
        reqs.append((i, ProposeRequest(s.request_id, res.new_token_ids[-1], anchor_pos, history, s.block_ids,
                                       s.sampling, gen, cap)))
    return reqs
