"""Held-out evaluation of a causal LM: per-domain perplexity on assistant tokens, greedy generation."""

from __future__ import annotations

import math

import torch

from sparkserve.train.lm.data import Document, fixed_batches


@torch.no_grad()
def perplexity_by_domain(model, docs: list[Document], seq_len: int, pad_id: int,
                         batch_size: int = 8) -> dict[str, dict[str, float]]:
    """{domain: {"nll": mean nat/token, "ppl": exp(nll), "tokens": n}} over assistant tokens."""
    model.eval()
    out: dict[str, dict[str, float]] = {}
    for domain in sorted({d.domain for d in docs}):
        total, count = 0.0, 0
        for inputs, targets, mask in fixed_batches([d for d in docs if d.domain == domain], seq_len,
                                                   batch_size, pad_id):
            logits = model.forward_train(inputs).float()
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            m = mask.flatten().bool()
            total += float(nll[m].sum())
            count += int(m.sum())
        mean = total / max(count, 1)
        out[domain] = {"nll": round(mean, 4), "ppl": round(math.exp(mean), 3), "tokens": count}
    return out


@torch.no_grad()
def greedy_generate(model, prompt_ids: list[int], max_new_tokens: int, stop_ids: set[int]) -> list[int]:
    """Greedy continuation by full recomputation (no KV cache: an evaluation helper, not a server)."""
    model.eval()
    ids = list(prompt_ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model.forward_train(torch.tensor([ids], dtype=torch.long))[0, -1]
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        if nxt in stop_ids:
            break
        ids.append(nxt)
    return out
