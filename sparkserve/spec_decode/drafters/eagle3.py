"""Eagle3 (DeepSpec ``Qwen3Eagle3Model``): one 2H-wide decoder layer, chain drafting (DSPARK.md §3).

Weights: ``embed_tokens``, ``fc`` [H, n*H], ``layers.0.{hidden_norm, input_layernorm,
self_attn.{q,k,v}_proj (in 2H), self_attn.o_proj, self_attn.{q,k}_norm, post_attention_layernorm,
mlp.*}``, ``norm``, ``lm_head`` (full vocabulary). The layer, for a row with token t and hidden input h::

    x = [input_layernorm(embed(t)); hidden_norm(h)]          # [2H]
    out = h + o_proj(attn(q(x), k(x), v(x)))                  # causal, RoPE at the row's position
    out = out + mlp(post_attention_layernorm(out))
    logits = lm_head(norm(out))

A context row at position p pairs h = fc(target features at p) with the token at p+1 and sits at
RoPE position p. Chain row j >= 1 pairs the previous row's ``out`` with draft j, at position s-1+j.

Serving (``Eagle3Proposer``):
- ``observe`` stores ``h_p = fc(features_p)`` for every row in a paged hidden store
  ([num_blocks, block_size, H], the drafter's only extra state besides its K/V cache) and writes the
  row's K/V wherever ``next_token_ids`` is known (>= 0).
- ``propose`` (stateless) recomputes the last context row s-1 from the stored h and the anchor,
  writes its K/V (so rows observed with an unknown next token get filled in), and uses its output
  as the chain's first hidden state; then ``max_draft_tokens`` chain steps, all requests batched.
  Step j's query (position s-1+j) attends, through the attention backend's drafting path, to the
  cached rows < s-1 and to the chain's fresh K/V of positions s-1..s-1+j (never written to the cache);
  one draft metadata serves every step.

Limitation: a context row's K/V depends on the *next* token, which a prefix-cache block hash does
not cover; a shared block's last row may therefore carry another request's next token. That only
costs draft quality, never correctness.
Upstream EAGLE-3 checkpoints (``midlayer.*``, 3 target layers, reduced vocabulary with ``d2t``) are
refused at load time.
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.attention.base import AttentionBackend, DraftMask
from sparkserve.attention.registry import get_backend
from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.decoder import MLP
from sparkserve.spec_decode.drafters.common import (
    DraftAttention,
    allocate_draft_cache,
    draft_attention,
    draw_drafts,
    is_greedy_request,
    slot_of,
)
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode.types import DraftBlock, ProposeRequest


class Eagle3Layer(nn.Module):
    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        cfg = dcfg.model
        self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DraftAttention(cfg, in_features=2 * cfg.hidden_size)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)


class Eagle3DraftModel(nn.Module):
    """The weights. ``state_dict()`` keys are exactly the checkpoint's."""

    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        cfg = dcfg.model
        if cfg.num_hidden_layers != 1:
            raise ValueError(f"Eagle3 drafters have exactly one layer (config says {cfg.num_hidden_layers})")
        self.config = dcfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.fc = nn.Linear(len(dcfg.target_layer_ids) * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.layers = nn.ModuleList([Eagle3Layer(dcfg)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def layer_input(self, token_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """token_ids [...], hidden [..., H] -> x [..., 2H]."""
        layer = self.layers[0]
        emb = self.embed_tokens(token_ids).to(hidden.dtype)
        return torch.cat([layer.input_layernorm(emb), layer.hidden_norm(hidden)], dim=-1)

    def finish(self, attn_out: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """attn_out [..., Hq, D], hidden input [..., H] -> out [..., H] (the next chain hidden)."""
        layer = self.layers[0]
        out = hidden + layer.self_attn.output(attn_out)
        return out + layer.mlp(layer.post_attention_layernorm(out))

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(out)).float()


class Eagle3Proposer:
    """A ``Proposer`` over an ``Eagle3DraftModel``: paged K/V (1 layer) plus a paged hidden store.
    ``attention_backend``: the target's backend instance (default: ``get_backend("auto")``)."""

    def __init__(self, model: Eagle3DraftModel, num_blocks: int, block_size: int,
                 attention_backend: AttentionBackend | None = None):
        dcfg = model.config
        cfg = dcfg.model
        self.model, self.config = model, dcfg
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.block_size = block_size
        self.backend = attention_backend or get_backend("auto", self.device.type)
        self.num_speculative_tokens = dcfg.ttt_length
        self.target_layer_ids = tuple(dcfg.target_layer_ids)
        self.needs_history = False  # works from target features, not ProposeRequest.token_ids
        self.has_confidence = False  # no confidence head
        self.confidence_temperatures: list[float] | None = None
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings + dcfg.ttt_length + 1,
                                      cfg.rope_theta, cfg.rope_scaling).to(self.device)
        self.kv_caches = allocate_draft_cache(1, num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim,
                                              self.dtype, self.device)
        self.hidden_store = torch.zeros(num_blocks, block_size, cfg.hidden_size, dtype=self.dtype,
                                        device=self.device)  # fc(features) per slot

    @staticmethod
    def cache_bytes_per_block(dcfg: DraftConfig, block_size: int, dtype: torch.dtype) -> int:
        m = dcfg.model
        return block_size * (2 * m.num_key_value_heads * m.head_dim + m.hidden_size) * dtype.itemsize

    def _write_kv(self, token_ids, hidden, positions, slots) -> None:
        x = self.model.layer_input(token_ids, hidden)
        k, v = self.model.layers[0].self_attn.key_value(x, positions, self.rotary)
        self.backend.write_kv(k, v, *self.kv_caches[0], slots)

    @torch.inference_mode()
    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        if features is None or features.shape[0] == 0:
            return
        keep = slot_mapping >= 0
        if not bool(keep.all()):
            features, positions, slot_mapping, next_token_ids = (
                features[keep], positions[keep], slot_mapping[keep], next_token_ids[keep])
        hidden = self.model.fc(features.to(self.dtype))  # [N, H]
        self.hidden_store.view(-1, hidden.shape[-1])[slot_mapping] = hidden
        known = next_token_ids >= 0
        if bool(known.any()):
            self._write_kv(next_token_ids[known], hidden[known], positions[known], slot_mapping[known])

    @torch.inference_mode()
    def propose(self, requests: list[ProposeRequest]) -> list[DraftBlock]:
        nums = [max(0, min(r.max_draft_tokens, self.num_speculative_tokens)) if r.anchor_position > 0 else 0
                for r in requests]
        if not requests or max(nums) == 0:
            return [DraftBlock([], None, None) for _ in requests]
        dev, bs = self.device, self.block_size
        attn = self.model.layers[0].self_attn
        starts = [r.anchor_position for r in requests]
        # the chain row j (j = 0: context row s-1) is also in the cache at j = 0; attend the cache for
        # positions < s-1 and carry chain K/V (row s-1 included) as fresh rows
        ctx = draft_attention(self.backend, requests, [max(s - 1, 0) for s in starts], max(nums), bs,
                              self.kv_caches, self.config.model.head_dim ** -0.5, dev)
        last = torch.tensor([slot_of(r.block_ids, s - 1, bs) if s > 0 else 0 for r, s in zip(requests, starts)],
                            dtype=torch.long, device=dev)  # [R] slot of s-1
        hidden = self.hidden_store.view(-1, self.hidden_store.shape[-1])[last]  # [R, H]
        anchors = torch.tensor([r.anchor_token_id for r in requests], dtype=torch.long, device=dev)
        start_pos = torch.tensor(starts, dtype=torch.long, device=dev)
        live = start_pos > 0
        self._write_kv(anchors[live], hidden[live], (start_pos - 1)[live], last[live])
        greedy = torch.tensor([is_greedy_request(r) for r in requests], device=dev)
        tokens_in, chain_k, chain_v = anchors, [], []
        tokens, probs = [], []
        for j in range(max(nums)):
            pos = (start_pos - 1 + j).clamp_min(0)  # [R]
            x = self.model.layer_input(tokens_in, hidden)  # [R, 2H]
            q = attn.query(x, pos, self.rotary)[:, None]  # [R, 1, Hq, D]
            k, v = attn.key_value(x, pos, self.rotary)
            chain_k.append(k)
            chain_v.append(v)
            out = ctx.forward(0, q, torch.stack(chain_k, 1), torch.stack(chain_v, 1), DraftMask(causal=True))
            hidden = self.model.finish(out[:, 0], hidden)  # [R, H]
            tokens_in, p = draw_drafts(self.model.logits(hidden), requests, greedy, [j < n for n in nums])
            tokens.append(tokens_in)
            probs.append(p)
        token_ids = torch.stack(tokens, 1).tolist()
        blocks = []
        for r, (req, n) in enumerate(zip(requests, nums)):
            q = torch.stack([probs[j][r] for j in range(n)]) if n > 0 and not is_greedy_request(req) else None
            blocks.append(DraftBlock(token_ids[r][:n], q, None))
        return blocks
