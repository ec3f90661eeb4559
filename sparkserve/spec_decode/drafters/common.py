"""Pieces every feature-conditioned drafter shares: its attention layer, its paged context cache
(same block tables and slots as the target), batched attention over cached context + fresh rows,
and drawing drafts with the exact distribution the verifier needs.

Paged layout (as the target's, ``attention/torch_backend.py``): per draft layer ``k`` and ``v``
[num_blocks, block_size, Hkv, D]; position p of a request lives at slot
``block_ids[p // block_size] * block_size + p % block_size``.

Drafting distribution (DSPARK.md §4, DeepSpec's convention): a request with temperature
T >= GREEDY_EPS draws each draft from ``q = softmax(z / T)`` in fp32, with no top-k/top-p/min-p
(any q is lossless as long as it is the one drafts were drawn from), using the request's generator
and ``draw_indices`` (the sampler's draw); q is returned as ``DraftBlock.probs``. A greedy request
takes ``argmax z`` and gets ``probs=None`` (deterministic drafts, verified as one-hot q).
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding, _rotate
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.sample import GREEDY_EPS, draw_indices
from sparkserve.spec_decode.types import ProposeRequest


def apply_rope(rotary: RotaryEmbedding, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Neox RoPE (the target's own rotation) on x [..., heads, D] at positions [...]."""
    cos = rotary.cos[positions].unsqueeze(-2)  # [..., 1, D/2]
    sin = rotary.sin[positions].unsqueeze(-2)
    return _rotate(x, cos, sin)


class DraftAttention(nn.Module):
    """Qwen3-style attention projections with per-head q/k RMSNorm; ``in_features`` defaults to H
    (Eagle3 uses 2H). Attention itself is done by the drafter over cached + fresh K/V."""

    def __init__(self, cfg: DecoderConfig, in_features: int | None = None):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        in_features = in_features or cfg.hidden_size
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(in_features, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(in_features, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(in_features, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def query(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding) -> torch.Tensor:
        """x [..., in], positions [...] -> q [..., Hq, D] (normed, rotated)."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        return apply_rope(rotary, self.q_norm(q), positions)

    def key_value(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding):
        """x [..., in], positions [...] -> (k [..., Hkv, D] normed + rotated, v [..., Hkv, D])."""
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        return apply_rope(rotary, self.k_norm(k), positions), v

    def output(self, attn: torch.Tensor) -> torch.Tensor:
        """attn [..., Hq, D] -> [..., H]."""
        return self.o_proj(attn.flatten(-2))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """q [R, Q, Hq, D], k/v [R, K, Hkv, D], mask bool [R, 1, Q or 1, K] (True = attend) -> [R, Q, Hq, D]."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype), attn_mask=mask,
        scale=scale, enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)


def allocate_draft_cache(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                         dtype: torch.dtype, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(k, v)] per draft layer, each [num_blocks, block_size, Hkv, D], zero-filled."""
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(num_layers)]


def write_slots(cache: torch.Tensor, slots: torch.Tensor, values: torch.Tensor) -> None:
    """cache [num_blocks, block_size, *F]; slots [N]; values [N, *F]."""
    cache.view(-1, *cache.shape[2:])[slots] = values.to(cache.dtype)


def read_slots(cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """cache [num_blocks, block_size, *F]; slots [...] -> [..., *F]."""
    return cache.view(-1, *cache.shape[2:])[slots]


def context_slots(requests: list[ProposeRequest], lengths: list[int], block_size: int, device):
    """Slots of positions 0..lengths[r]-1 of each request, padded to a rectangle.

    Returns (slots [R, L] long (padding -> 0), valid [R, L] bool) with L = max(lengths) (>= 1).
    """
    max_len = max(max(lengths), 1)
    max_blocks = -(-max_len // block_size)
    table = torch.zeros(len(requests), max_blocks, dtype=torch.long)
    for r, (req, length) in enumerate(zip(requests, lengths)):
        need = -(-length // block_size)
        if len(req.block_ids) < need:
            raise ValueError(f"request {req.request_id}: {len(req.block_ids)} blocks cannot hold its "
                             f"{length} context positions (block_size {block_size})")
        table[r, :need] = torch.tensor(req.block_ids[:need], dtype=torch.long)
    table = table.to(device)
    pos = torch.arange(max_len, device=device)  # [L]
    slots = table[:, pos // block_size] * block_size + pos % block_size  # [R, L]
    valid = pos[None, :] < torch.tensor(lengths, device=device)[:, None]  # [R, L]
    return torch.where(valid, slots, torch.zeros_like(slots)), valid


def context_block_mask(ctx_valid: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, num_ctx: int,
                       causal: bool, window: int | None) -> torch.Tensor:
    """Mask of a block's queries over [context; block] keys.

    ctx_valid [R, L]; q_pos [R, Q] query positions; k_pos [R, L + K] key positions. Context keys
    are visible when valid; block keys always, or only at positions <= the query's when ``causal``.
    A sliding ``window`` keeps keys with |q - k| < window (q - k < window when causal).
    Returns bool [R, 1, Q, L + K].
    """
    num_q = q_pos.shape[1]
    visible = torch.ones(q_pos.shape[0], num_q, k_pos.shape[1], dtype=torch.bool, device=q_pos.device)
    visible[:, :, :num_ctx] &= ctx_valid[:, None, :]
    diff = q_pos[:, :, None] - k_pos[:, None, :]  # [R, Q, L + K]
    if causal:
        visible[:, :, num_ctx:] &= diff[:, :, num_ctx:] >= 0
    if window is not None:
        visible &= diff < window
        if not causal:
            visible &= -diff < window
    return visible[:, None]


def draw_drafts(logits: torch.Tensor, requests: list[ProposeRequest], greedy: torch.Tensor,
                active: list[bool]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One draft per request from fp32 logits [R, V] (module docstring).

    ``greedy`` [R] bool; ``active[r]`` False: the request needs no draft here, so no generator is
    touched (seeded drafts do not depend on the rest of the batch). Returns (token ids [R] long,
    fp32 probs [R, V] with meaningful rows only for sampled active requests, or None if there are none).
    """
    tokens = logits.argmax(dim=-1)  # [R]
    sampled = [r for r, req in enumerate(requests) if active[r] and not bool(greedy[r])]
    if not sampled:
        return tokens, None
    temps = torch.tensor([requests[r].sampling.temperature for r in range(len(requests))],
                         dtype=torch.float32, device=logits.device).clamp_min(GREEDY_EPS)  # [R]
    probs = torch.softmax(logits.float() / temps[:, None], dim=-1)  # [R, V]
    index = torch.tensor(sampled, device=logits.device)
    tokens[index] = draw_indices(probs[index], [requests[r].generator for r in sampled])
    return tokens, probs


def is_greedy_request(req: ProposeRequest) -> bool:
    return req.sampling.temperature < GREEDY_EPS
