"""Pieces every feature-conditioned drafter shares: its attention layer, its paged context cache
(same block tables and slots as the target), the attention context of a propose call, and drawing
drafts with the exact distribution the verifier needs.

Attention goes through the target's attention backend (``attention/base.py``): context rows are
stored with ``backend.write_kv``; a propose call builds one ``DraftAttentionContext`` (metadata from
``backend.build_draft_metadata``) that every draft layer and chain step reuses, attending its fresh
rows over the cached context plus the fresh rows, which are never written. ``attend`` is the dense
path of the training forwards (no cache).

Paged layout (as the target's): per draft layer ``k`` and ``v`` [num_blocks, block_size, Hkv, D];
position p of a request lives at slot ``block_ids[p // block_size] * block_size + p % block_size``.

Drafting distribution (DSPARK.md §4, DeepSpec's convention): a request with temperature
T >= GREEDY_EPS draws each draft from ``q = softmax(z / T)`` in fp32, with no top-k/top-p/min-p
(any q is lossless as long as it is the one drafts were drawn from), using the request's generator
and ``draw_indices`` (the sampler's draw); q is returned as ``DraftBlock.probs``. A greedy request
takes ``argmax z`` and gets ``probs=None`` (deterministic drafts, verified as one-hot q).
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.attention.base import AttentionBackend, DraftAttentionContext, DraftBatch
from sparkserve.layers import fused
from sparkserve.layers.linear import concat_linears
from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.sample import GREEDY_EPS, draw_indices
from sparkserve.spec_decode.types import ProposeRequest


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
        self.qk_norm = True  # what layers/fused.qkv_norm_rope reads
        self.qkv_proj: nn.Linear | None = None  # set by fuse() for serving

    def fuse(self) -> None:
        """Serving only: block rows take one [q; k; v] product (``fused_qkv``); q_proj goes, k_proj and v_proj
        stay for context rows (``key_value``), which need no queries."""
        self.qkv_proj = concat_linears(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj

    def fused_qkv(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding):
        """After ``fuse``: x [R, B, in], positions [R, B] -> q [R, B, Hq, D], k, v [R, B, Hkv, D] (normed and
        rotated as ``query``/``key_value``; the native per-head norm + RoPE where available)."""
        r, b = x.shape[0], x.shape[1]
        q, k, v = fused.qkv_norm_rope(self, self.qkv_proj(x.reshape(r * b, -1)), positions.reshape(-1), rotary)
        return q.view(r, b, *q.shape[1:]), k.view(r, b, *k.shape[1:]), v.view(r, b, *v.shape[1:])

    def query(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding) -> torch.Tensor:
        """x [..., in], positions [...] -> q [..., Hq, D] (normed, rotated)."""
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.head_dim))
        return rotary.rotate(self.q_norm(q), positions)

    def key_value(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding):
        """x [..., in], positions [...] -> (k [..., Hkv, D] normed + rotated, v [..., Hkv, D])."""
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.head_dim))
        return rotary.rotate(self.k_norm(k), positions), v

    def output(self, attn: torch.Tensor) -> torch.Tensor:
        """attn [..., Hq, D] -> [..., H]."""
        return self.o_proj(attn.flatten(-2))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Dense masked attention (training forwards, no cache).

    q [R, Q, Hq, D], k/v [R, K, Hkv, D], mask bool [R, 1, Q or 1, K] (True = attend) -> [R, Q, Hq, D]."""
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


def draft_attention(backend: AttentionBackend, requests: list[ProposeRequest], context_lens: list[int],
                    max_fresh: int, block_size: int, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                    scale: float, device: torch.device) -> DraftAttentionContext:
    """The attention context of one propose call: request r attends its cached positions
    0..context_lens[r]-1 (through ``block_ids``) plus the (at most ``max_fresh``) fresh rows each
    layer passes."""
    batch = DraftBatch(context_lens, [r.block_ids for r in requests], block_size, max_fresh)
    return DraftAttentionContext(backend, backend.build_draft_metadata(batch, device), kv_caches, scale)


def slot_of(block_ids: list[int], position: int, block_size: int) -> int:
    """Cache slot of one position of a request (its block table must cover it)."""
    return block_ids[position // block_size] * block_size + position % block_size


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
