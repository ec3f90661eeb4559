"""Lossless verification of chain drafts: speculative (rejection) sampling over a ragged batch.

Glossary (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding";
Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling"; the DSpark
paper; design notes in shared/design/DSPARK.md §1.5 and §4):

- **anchor**: the last token the target emitted, at position s. Its KV is not computed yet, so it is
  the first token of the verify block ``[anchor, d1..dl]``.
- **draft** d_k (k = 1..l): a token a drafter proposed for position s+k, drawn from the draft
  distribution q_k (conditioned on anchor, d1..d_{k-1}). ``draft_probs=None`` means the drafter is
  deterministic (n-gram, greedy drafter): q_k is one-hot at d_k.
- **verify length** l (0..gamma): how many drafts of the block the target checks this step; the
  planner picks it from the confidences. l = 0 is plain decoding of one token.
- **target distribution** p_k: the request's *processed* distribution (temperature -> top-k ->
  top-p -> min-p, ``processed_logprobs``) of verify row k-1, which scores position s+k. Row l is
  the **bonus row**, p_{l+1}.
- **accepted**: drafts d_1..d_a that passed the test, a = ``num_accepted`` (a prefix: the first
  rejection ends the block). Stochastic test: accept d_k iff ``u_k * q_k(d_k) < p_k(d_k)`` with
  u_k ~ U[0, 1), i.e. with probability min(1, p/q); a draft with q_k(d_k) = 0 (the drafter broke its
  contract) is rejected. Greedy target (temperature < GREEDY_EPS): accept iff d_k = argmax p_k.
- **recovered** token: emitted at the first rejection k, drawn from the residual
  max(p_k - q_k, 0) (for one-hot q: p_k with d_k zeroed); if the residual is all zero, from p_k.
  Greedy: argmax p_k.
- **bonus** token: emitted when all l drafts are accepted, drawn from p_{l+1} (greedy: argmax).
- **confidence** c_k: the drafter's estimate of P(d_k accepted | d_1..d_{k-1} accepted). It only
  chooses l; the verifier never reads it, and losslessness does not depend on it.

Each request emits a+1 tokens, and for any q with q(d) > 0 on sampled drafts the emitted sequence
is distributed exactly as plain decoding from p (P(y) = min(p, q)(y) + (1 - sum min(p, q)) *
residual(y) / sum residual = p(y)).

Randomness, per stochastic request, always exactly this much whatever gets accepted, so the
generator's state after a step depends only on l:
1. one ``draw_uniforms(generator, l)`` call: u_1..u_l (none when l = 0);
2. one inverse-CDF draw ``draw_indices(weights, generators)`` (one U[0, 1) double) for the recovered or
   bonus token.
In a batch, step 1 runs for every request in batch order, then step 2 in batch order; with one
generator per request (``RequestGenerators``) a request's output therefore does not depend on its
batch-mates. Greedy requests consume nothing. With l = 0 the result is exactly ``Sampler.sample``'s
for that row (same token, same generator state afterwards).

Logprobs follow the sampler's "raw" convention: for each emitted token, ``log_softmax`` of the
target logits row that emitted it (row j for the j-th emitted token), fp32, before any filter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sparkserve.sample import GREEDY_EPS, SamplingTensors, draw_indices, draw_uniforms, kernels, processed_logprobs
from sparkserve.sample.sampler import TokenLogprobs
from sparkserve.spec_decode.types import DraftBlock
from sparkserve.spec_decode.verify_native import verify_native
from sparkserve.step import SamplingMeta


@dataclass
class VerifyInput:
    """One request's verify block (ragged: l differs between requests).

    ``draft_probs`` [l, V]: the exact distribution each draft was drawn from (any float dtype; read
    in fp32, moved to the logits' device if needed); None: deterministic drafts (one-hot q).
    ``generator`` must live on the logits' device; None uses torch's default generator (not
    reproducible). Greedy requests ignore both.
    """

    draft_token_ids: list[int]  # [l]
    draft_probs: torch.Tensor | None  # [l, V] or None
    sampling: SamplingMeta
    generator: torch.Generator | None = None

    @property
    def num_draft_tokens(self) -> int:
        return len(self.draft_token_ids)

    @property
    def is_greedy(self) -> bool:
        return self.sampling.temperature < GREEDY_EPS

    @classmethod
    def from_draft_block(cls, block: DraftBlock, num_draft_tokens: int, sampling: SamplingMeta,
                         generator: torch.Generator | None) -> "VerifyInput":
        """The first ``num_draft_tokens`` drafts of a block (the verify length the planner chose)."""
        if not 0 <= num_draft_tokens <= len(block.token_ids):
            raise ValueError(f"verify length {num_draft_tokens} outside 0..{len(block.token_ids)}")
        probs = None if block.probs is None else block.probs[:num_draft_tokens]
        return cls(list(block.token_ids[:num_draft_tokens]), probs, sampling, generator)


@dataclass
class VerifyOutput:
    """What one request emits: ``token_ids`` [num_accepted + 1] = accepted drafts, then one
    recovered or bonus token. ``logprobs`` pairs with ``token_ids`` (None when not requested)."""

    token_ids: list[int]
    num_accepted: int
    logprobs: list[TokenLogprobs] | None = None


def verify(
    target_logits: torch.Tensor,  # [sum(l_i + 1), V]: per request, rows for [anchor, d1..dl]
    inputs: Sequence[VerifyInput],  # [num_requests]
    backend: str = "auto",
) -> list[VerifyOutput]:
    """Verify every request's block against the target (module docstring); pure function.

    Request i owns ``l_i + 1`` consecutive rows; its row j is p_{j+1}, which judges d_{j+1}; row
    l_i is the bonus row. ``backend`` (``sample/kernels.py``): "auto" runs the fused Triton verifier
    (``sparkserve_triton.verify``) on CUDA logits when Triton imports, the native kernel
    (``verify_native``) on CPU logits when ``sparkserve.native.available()``, else the torch path;
    "torch" / "native" / "triton" force one.
    """
    _check_inputs(target_logits, inputs)
    kind = kernels.choose(backend, target_logits)
    if kind != "torch":  # one fused kernel call; the same uniforms from the same generators
        fused = verify_native if kind == "native" else kernels.triton_verify
        num_accepted, final_ids = fused(target_logits, inputs)
        outputs = [VerifyOutput(token_ids=list(inp.draft_token_ids[:a]) + [tok], num_accepted=a)
                   for inp, a, tok in zip(inputs, num_accepted, final_ids)]
        _attach_logprobs(target_logits, inputs, _starts(inputs), outputs)
        return outputs
    device = target_logits.device
    lengths = [inp.num_draft_tokens for inp in inputs]  # [B]
    starts = _starts(inputs)
    greedy = [inp.is_greedy for inp in inputs]  # [B]

    probs = None  # [N, V] fp32 processed probabilities; only needed by stochastic requests
    if not all(greedy):
        params = SamplingTensors.from_metas([inp.sampling for inp in inputs], device=device,
                                            repeats=[n + 1 for n in lengths])
        probs = processed_logprobs(target_logits, *params).exp()
    argmax = target_logits.argmax(dim=-1) if any(greedy) else None  # [N]; lowest index on ties

    accepted = _accept_mask(inputs, starts, greedy, probs, argmax, device)  # [D] on host
    num_accepted, pos = [], 0
    for n in lengths:
        a = 0
        while a < n and accepted[pos + a]:
            a += 1
        num_accepted.append(a)
        pos += n

    final_ids = _final_tokens(inputs, starts, num_accepted, greedy, probs, argmax, device)  # [B]
    outputs = [
        VerifyOutput(token_ids=list(inp.draft_token_ids[:a]) + [tok], num_accepted=a)
        for inp, a, tok in zip(inputs, num_accepted, final_ids)
    ]
    _attach_logprobs(target_logits, inputs, starts, outputs)
    return outputs


def _starts(inputs: Sequence[VerifyInput]) -> list[int]:
    """The first logits row of each request [B]."""
    starts = [0] * len(inputs)
    for i in range(1, len(inputs)):
        starts[i] = starts[i - 1] + inputs[i - 1].num_draft_tokens + 1
    return starts


def _check_inputs(target_logits: torch.Tensor, inputs: Sequence[VerifyInput]) -> None:
    num_rows = sum(inp.num_draft_tokens + 1 for inp in inputs)
    if target_logits.dim() != 2 or target_logits.shape[0] != num_rows:
        raise ValueError(f"target_logits {tuple(target_logits.shape)}, expected [{num_rows}, vocab]")
    vocab = target_logits.shape[1]
    for i, inp in enumerate(inputs):
        if any(not 0 <= t < vocab for t in inp.draft_token_ids):
            raise ValueError(f"request {i}: draft token id outside 0..{vocab - 1}")
        if inp.draft_probs is not None and tuple(inp.draft_probs.shape) != (inp.num_draft_tokens, vocab):
            raise ValueError(f"request {i}: draft_probs {tuple(inp.draft_probs.shape)}, "
                             f"expected [{inp.num_draft_tokens}, {vocab}]")


def _accept_mask(inputs, starts, greedy, probs, argmax, device) -> list[bool]:
    """Accept/reject of every draft, flat in request order [D]; draws each request's uniforms."""
    rows, ids, is_greedy, q_drafts, uniforms = [], [], [], [], []
    for i, inp in enumerate(inputs):
        n = inp.num_draft_tokens
        if n == 0:
            continue
        rows.extend(range(starts[i], starts[i] + n))
        ids.extend(inp.draft_token_ids)
        is_greedy.extend([greedy[i]] * n)
        if greedy[i]:  # placeholders: greedy drafts are judged by argmax and draw nothing
            q_drafts.append(torch.ones(n, device=device))
            uniforms.append(torch.zeros(n, device=device))
            continue
        if inp.draft_probs is None:
            q_drafts.append(torch.ones(n, device=device))  # one-hot q: q(d) = 1
        else:
            draft_ids = torch.tensor(inp.draft_token_ids, device=device)  # [n]
            q = inp.draft_probs.to(device).gather(1, draft_ids[:, None]).squeeze(1)  # [n]
            q_drafts.append(q.float())
        uniforms.append(draw_uniforms(inp.generator, n).to(device))
    if not rows:
        return []
    rows_t = torch.tensor(rows, device=device)  # [D]
    ids_t = torch.tensor(ids, device=device)  # [D]
    if probs is None:  # all greedy
        return (ids_t == argmax[rows_t]).tolist()
    p = probs[rows_t, ids_t]  # [D]
    q = torch.cat(q_drafts)  # [D]
    u = torch.cat(uniforms)  # [D]
    accept = (q > 0) & (u * q < p)  # [D]
    if argmax is not None:
        accept = torch.where(torch.tensor(is_greedy, device=device), ids_t == argmax[rows_t], accept)
    return accept.tolist()


def _final_tokens(inputs, starts, num_accepted, greedy, probs, argmax, device) -> list[int]:
    """The recovered or bonus token of every request [B]; one draw per stochastic request, in order."""
    tokens = torch.empty(len(inputs), dtype=torch.long, device=device)  # [B]
    rows = [starts[i] + a for i, a in enumerate(num_accepted)]  # [B], the row that emits it
    greedy_idx = [i for i, g in enumerate(greedy) if g]
    if greedy_idx:
        tokens[torch.tensor(greedy_idx, device=device)] = argmax[torch.tensor([rows[i] for i in greedy_idx],
                                                                             device=device)]
    stoch = [i for i, g in enumerate(greedy) if not g]  # [S]
    if stoch:
        p = probs[torch.tensor([rows[i] for i in stoch], device=device)]  # [S, V]
        q = torch.zeros_like(p)  # [S, V]: q of the rejected draft; 0 on bonus rows (residual = p)
        sampled, sampled_q, one_hot, one_hot_ids = [], [], [], []
        for j, i in enumerate(stoch):
            inp, a = inputs[i], num_accepted[i]
            if a == inp.num_draft_tokens:
                continue
            if inp.draft_probs is None:
                one_hot.append(j)
                one_hot_ids.append(inp.draft_token_ids[a])
            else:
                sampled.append(j)
                sampled_q.append(inp.draft_probs[a].to(device=device, dtype=torch.float32))
        if sampled:
            q[torch.tensor(sampled, device=device)] = torch.stack(sampled_q)
        if one_hot:
            q[torch.tensor(one_hot, device=device), torch.tensor(one_hot_ids, device=device)] = 1.0
        residual = (p - q).clamp_min_(0.0)  # [S, V]; one-hot q: p with the draft zeroed
        weights = torch.where(residual.sum(dim=-1, keepdim=True) > 0, residual, p)  # p == q: fall back to p
        drawn = draw_indices(weights, [inputs[i].generator for i in stoch])  # [S]
        tokens[torch.tensor(stoch, device=device)] = drawn
    return tokens.tolist()  # one host sync


def _attach_logprobs(target_logits, inputs, starts, outputs: list[VerifyOutput]) -> None:
    """Raw logprobs (sampler convention) of every emitted token, for requests that asked."""
    wanted = [i for i, inp in enumerate(inputs) if inp.sampling.logprobs is not None]
    if not wanted:
        return
    device = target_logits.device
    rows = [starts[i] + j for i in wanted for j in range(len(outputs[i].token_ids))]  # [L]
    chosen_ids = [t for i in wanted for t in outputs[i].token_ids]  # [L]
    raw = torch.log_softmax(target_logits[torch.tensor(rows, device=device)].float(), dim=-1)  # [L, V]
    chosen = raw.gather(1, torch.tensor(chosen_ids, device=device)[:, None]).squeeze(1).tolist()  # [L]
    num_top = min(max(inputs[i].sampling.logprobs for i in wanted), raw.shape[1])
    top_vals, top_ids = raw.topk(num_top, dim=-1)  # [L, num_top], descending
    top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
    pos = 0
    for i in wanted:
        k = inputs[i].sampling.logprobs
        entries = []
        for _ in outputs[i].token_ids:
            entries.append((chosen[pos], list(zip(top_ids[pos][:k], top_vals[pos][:k]))))
            pos += 1
        outputs[i].logprobs = entries
