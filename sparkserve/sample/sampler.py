"""Sample one token per row of logits: greedy rows by argmax, the rest from the processed distribution.

Randomness (the contract the speculative verifier reuses):
- A greedy row consumes nothing from any generator.
- A random row makes exactly one draw, ``draw_from_probs``: the exponential race
  ``argmax_i(w_i / E_i)`` with ``E = torch.empty(V).exponential_(generator=g)`` (fp32), i.e. the
  Gumbel-max trick ``argmax(log w - log E)``. It returns i with probability ``w_i / sum(w)``, needs no
  normalisation (recovered tokens can pass ``max(p - q, 0)`` as is) and never returns a zero weight.
  Each draw takes V exponentials from the row's own generator, so a seeded request's tokens do not
  depend on what else is in the batch.
- ``draw_uniform``/``draw_uniforms`` take U[0, 1) values from a generator (acceptance tests).

Logprobs convention ("raw", the OpenAI/vLLM default): when ``meta.logprobs`` is not None the row
reports ``log_softmax(logits)`` in fp32 at temperature 1, before any filter, both for the chosen
token and for the top ``meta.logprobs`` tokens. A token a filter excluded is never chosen, but its
raw logprob can still appear in the top list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sparkserve.sample.metadata import SamplingTensors
from sparkserve.sample.processing import GREEDY_EPS, processed_logprobs
from sparkserve.step import SamplingMeta

_TINY = torch.finfo(torch.float32).tiny  # E is clamped to this, so w / E stays finite and 0 / E is 0

TokenLogprobs = tuple[float, list[tuple[int, float]]]  # (chosen logprob, [(token_id, logprob), ...])


@dataclass
class SampleOutput:
    """One sampled token per row, in row order."""

    token_ids: list[int]  # [num_rows]
    logprobs: list[TokenLogprobs | None]  # [num_rows]; None where meta.logprobs is None


def race_argmax(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Exponential race over non-negative weights [V] -> 0-dim int64 tensor (no host sync)."""
    exp = torch.empty(weights.shape, dtype=torch.float32, device=weights.device)  # [V]
    exp.exponential_(generator=generator).clamp_min_(_TINY)
    return (weights.float() / exp).argmax()


def draw_from_probs(probs_row: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw index i with probability ``probs_row[i] / probs_row.sum()``; probs_row [V] >= 0, not all 0.

    ``generator`` must live on ``probs_row``'s device; None uses torch's default generator there.
    """
    return int(race_argmax(probs_row, generator))


def draw_uniforms(generator: torch.Generator | None, num: int) -> torch.Tensor:
    """``num`` U[0, 1) fp32 values [num] on the generator's device (CPU when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(num, generator=generator, device=device)


def draw_uniform(generator: torch.Generator | None) -> float:
    """One U[0, 1) value from the generator."""
    return float(draw_uniforms(generator, 1)[0])


class Sampler:
    """Pure function of logits, per-row metadata and per-row generators (it holds no state).

    A random row draws with its own generator, which must live on the logits' device
    (``RequestGenerators(device=...)``); None there means torch's default generator (not
    reproducible). Greedy rows (temperature < ``GREEDY_EPS``) ignore their generator.
    """

    def sample(
        self,
        logits: torch.Tensor,  # [num_rows, vocab]
        metas: Sequence[SamplingMeta],  # [num_rows]
        generators: Sequence[torch.Generator | None],  # [num_rows]; may be None for greedy rows
    ) -> SampleOutput:
        num_rows = logits.shape[0]
        if len(metas) != num_rows or len(generators) != num_rows:
            raise ValueError(f"{num_rows} logits rows, {len(metas)} metas, {len(generators)} generators")
        random_rows = [i for i, m in enumerate(metas) if m.temperature >= GREEDY_EPS]
        if not random_rows:  # fast path: one argmax, no softmax
            token_ids = logits.argmax(dim=-1).tolist()
        else:
            token_ids = self._sample_mixed(logits, metas, generators, random_rows)
        return SampleOutput(token_ids=token_ids, logprobs=self._logprobs(logits, metas, token_ids))

    @staticmethod
    def _sample_mixed(logits, metas, generators, random_rows: list[int]) -> list[int]:
        token_ids = logits.argmax(dim=-1)  # [num_rows]; greedy rows keep these
        index = torch.tensor(random_rows, device=logits.device)  # [R]
        params = SamplingTensors.from_metas([metas[i] for i in random_rows], device=logits.device)
        probs = processed_logprobs(logits[index], *params).exp()  # [R, vocab]
        drawn = torch.stack([race_argmax(probs[j], generators[i]) for j, i in enumerate(random_rows)])  # [R]
        token_ids[index] = drawn
        return token_ids.tolist()

    @staticmethod
    def _logprobs(logits, metas, token_ids: list[int]) -> list[TokenLogprobs | None]:
        out: list[TokenLogprobs | None] = [None] * len(metas)
        rows = [i for i, m in enumerate(metas) if m.logprobs is not None]
        if not rows:
            return out
        index = torch.tensor(rows, device=logits.device)  # [L]
        raw = torch.log_softmax(logits[index].float(), dim=-1)  # [L, vocab]
        chosen_ids = torch.tensor([token_ids[i] for i in rows], device=logits.device)  # [L]
        chosen = raw.gather(1, chosen_ids[:, None]).squeeze(1).tolist()  # [L]
        num_top = min(max(metas[i].logprobs for i in rows), raw.shape[1])
        top_vals, top_ids = raw.topk(num_top, dim=-1)  # [L, num_top], descending
        top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
        for j, i in enumerate(rows):
            k = metas[i].logprobs
            out[i] = (chosen[j], list(zip(top_ids[j][:k], top_vals[j][:k])))
        return out
