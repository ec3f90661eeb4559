"""DSpark / DFlash: a parallel block drafter conditioned on target features (DSPARK.md §1-2).

Weights (``DSparkDraftModel``, DeepSpec key names, no ``model.`` prefix): ``embed_tokens``,
``layers.N.{self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm, mlp.*, input_layernorm,
post_attention_layernorm}``, ``norm``, ``fc`` [H, n*H], ``hidden_norm``, ``lm_head``, optional
``markov_head.*`` and ``confidence_head.*``. The z-lab DFlash layout has no ``embed_tokens``/``lm_head``:
the proposer is handed the target's modules.

Serving (``DSparkProposer``):
- ``observe``: every processed target row p becomes a *context row*: ``c = hidden_norm(fc(features_p))``,
  then per layer ``k = rope_p(k_norm(k_proj(c)))``, ``v = v_proj(c)`` (no input_layernorm), written
  to the drafter's paged cache at the target's slot for p. Context rows are never queries.
- ``propose``: per request, a block ``[anchor, M x (B-1)]`` at positions s..s+B-1 (s = anchor
  position) goes through the layers; block queries attend to the request's cached context
  (positions < s) and to all block rows with no mask (DeepSpec), through the attention backend's
  drafting path (one metadata per call, one ``forward_draft`` per layer for all requests).
  Then ``norm``, ``lm_head`` and, position by position, the Markov head, the draw, and the
  confidence head (``heads.py``; natively, all steps in one call: ``markov_native.py``). DeepSpec
  layout: row k predicts position s+k+1 (B drafts). z-lab: row j >= 1 predicts s+j (B-1 drafts);
  optional causal/sliding layers, embedding scale, logit multiplier and soft-cap as z-lab defines them.
Nothing but the context cache persists between calls; block K/V are never written.
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.attention.base import AttentionBackend, DraftMask
from sparkserve.attention.registry import get_backend
from sparkserve.layers import fused
from sparkserve.layers.linear import input_dtype
from sparkserve.layers.norm import RMSNorm
from sparkserve.layers.rotary import RotaryEmbedding
from sparkserve.models.decoder import MLP
from sparkserve.spec_decode.drafters.common import (
    DraftAttention,
    allocate_draft_cache,
    attend,
    draft_attention,
    draw_drafts,
    is_greedy_request,
)
from sparkserve.spec_decode.drafters.config import DraftConfig
from sparkserve.spec_decode import markov_native
from sparkserve.spec_decode.heads import ConfidenceHead, build_markov_head
from sparkserve.spec_decode.types import DraftBlock, ProposeRequest


class DSparkLayer(nn.Module):
    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        cfg = dcfg.model
        self.self_attn = DraftAttention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DSparkDraftModel(nn.Module):
    """The weights. ``state_dict()`` keys are exactly the checkpoint's."""

    def __init__(self, dcfg: DraftConfig):
        super().__init__()
        cfg = dcfg.model
        self.config = dcfg
        owns_vocab = dcfg.kind != "zlab-dflash"
        if owns_vocab:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DSparkLayer(dcfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.fc = nn.Linear(len(dcfg.target_layer_ids) * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.hidden_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if owns_vocab:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.markov_head = build_markov_head(dcfg.markov_head_type, cfg.vocab_size, cfg.hidden_size,
                                             dcfg.markov_rank) if owns_vocab else None
        self.confidence_head = None
        if owns_vocab and dcfg.enable_confidence_head:
            self.confidence_head = ConfidenceHead(cfg.hidden_size,
                                                  dcfg.markov_rank if dcfg.confidence_head_with_markov else 0)

    def context_kv(self, features: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding):
        """features [N, n*H], positions [N] -> [(k [N, Hkv, D], v [N, Hkv, D])] per layer."""
        ctx = self.hidden_norm(self.fc(features))  # [N, H], shared by all layers
        return [layer.self_attn.key_value(ctx, positions, rotary) for layer in self.layers]

    def block_layers(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding,
                     attend_layer) -> torch.Tensor:
        """Block rows through the layers and the final norm (serving and training share this loop).

        x [R, B, H] embedded block; positions [R, B]; ``attend_layer(i, q [R, B, Hq, D], k [R, B, Hkv, D],
        v)`` -> [R, B, Hq, D]: layer i's attention of the block over its context and itself.
        Returns post-``norm`` h [R, B, H].
        """
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            if attn.qkv_proj is not None:  # fused for serving
                q, k, v = attn.fused_qkv(h, positions, rotary)
            else:
                q = attn.query(h, positions, rotary)  # [R, B, Hq, D]
                k, v = attn.key_value(h, positions, rotary)  # [R, B, Hkv, D]
            x, h = fused.add_rms_norm(x, attn.output(attend_layer(i, q, k, v)), layer.post_attention_layernorm)
            x = x + layer.mlp(h)
        return self.norm(x)

    def fuse_for_inference(self) -> "DSparkDraftModel":
        """Serving only: fused [q; k; v] products for block rows and [gate; up] for the MLPs, with the native
        norm/RoPE and SiLU kernels (the same function, a few ulps apart; the captured draft step runs these)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
        return self

    def block_hidden(self, x: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding, context,
                     masks: list[torch.Tensor]) -> torch.Tensor:
        """``block_layers`` with dense attention (training): ``context(i)`` -> (k [R, L, Hkv, D], v) of
        layer i's context; masks[i] bool [R, 1, B or 1, L + B] over [context; block] keys."""
        scale = self.config.model.head_dim ** -0.5

        def attend_layer(i, q, k, v):
            k_ctx, v_ctx = context(i)
            return attend(q, torch.cat([k_ctx.to(k.dtype), k], 1), torch.cat([v_ctx.to(v.dtype), v], 1),
                          masks[i], scale)

        return self.block_layers(x, positions, rotary, attend_layer)


class DSparkProposer:
    """A ``Proposer`` over a ``DSparkDraftModel`` with its own paged context cache.

    ``embed_tokens``/``lm_head``: the target's modules, required for the z-lab layout (ignored
    otherwise). ``confidence_temperatures``: optional per-position STS temperatures T_k
    (c_k = sigmoid(logit_k / T_k)); None = 1. ``attention_backend``: the target's backend instance
    (default: ``get_backend("auto")``). ``markov_backend``: where the Markov loop (head steps, draws,
    confidences) runs, ``markov_native.BACKENDS`` ("auto": the native kernel when it is usable).
    """

    markov_backend = "auto"

    def __init__(self, model: DSparkDraftModel, num_blocks: int, block_size: int, *,
                 embed_tokens: nn.Module | None = None, lm_head: nn.Module | None = None,
                 confidence_temperatures: list[float] | None = None,
                 attention_backend: AttentionBackend | None = None):
        dcfg = model.config
        cfg = dcfg.model
        self.model, self.config = model, dcfg
        self.zlab = dcfg.kind == "zlab-dflash"
        if self.zlab:
            if embed_tokens is None or lm_head is None:
                raise ValueError("a z-lab DFlash drafter uses the target's embed_tokens and lm_head: pass both")
            self.embed_tokens, self.lm_head = embed_tokens, lm_head
        else:
            self.embed_tokens, self.lm_head = model.embed_tokens, model.lm_head
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.block_size = block_size
        self.backend = attention_backend or get_backend("auto", self.device.type)
        self.num_speculative_tokens = dcfg.num_draft_tokens
        self.target_layer_ids = tuple(dcfg.target_layer_ids)
        self.needs_history = False  # works from target features, not ProposeRequest.token_ids
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings + dcfg.block_size + 1,
                                      cfg.rope_theta, cfg.rope_scaling).to(self.device)
        self.kv_caches = allocate_draft_cache(cfg.num_hidden_layers, num_blocks, block_size,
                                              cfg.num_key_value_heads, cfg.head_dim, self.dtype, self.device)
        self.confidence_temperatures = confidence_temperatures
        self.has_confidence = model.confidence_head is not None
        self.native_stack = None  # set by capture_step(): the block layers as one native call
        self.graphs = None  # set by runner/draft_graphs.build on a GPU: CUDA graphs of block_forward

    def capture_step(self) -> str | None:
        """Run the block layers as one native call from now on (``native_draft_stack``); returns None when
        captured, else why not (the modules then stay)."""
        from sparkserve.spec_decode.drafters.native_draft_stack import NativeDraftStack, unsupported_reason

        reason = unsupported_reason(self.model, self.rotary)
        self.native_stack = NativeDraftStack(self.model, self.rotary) if reason is None else None
        return reason

    @staticmethod
    def cache_bytes_per_block(dcfg: DraftConfig, block_size: int, dtype: torch.dtype) -> int:
        m = dcfg.model
        return 2 * m.num_hidden_layers * block_size * m.num_key_value_heads * m.head_dim * dtype.itemsize

    @torch.inference_mode()
    def observe(self, features, input_ids, positions, slot_mapping, next_token_ids) -> None:
        if features is None or features.shape[0] == 0:
            return
        keep = slot_mapping >= 0  # negative slots: padding rows
        if not bool(keep.all()):
            features, positions, slot_mapping = features[keep], positions[keep], slot_mapping[keep]
        kvs = self.model.context_kv(features.to(self.dtype), positions, self.rotary)
        for (k_cache, v_cache), (k, v) in zip(self.kv_caches, kvs):
            self.backend.write_kv(k, v, k_cache, v_cache, slot_mapping)

    @torch.inference_mode()
    def propose(self, requests: list[ProposeRequest]) -> list[DraftBlock]:
        nums = [max(0, min(r.max_draft_tokens, self.num_speculative_tokens)) for r in requests]
        if not requests or max(nums) == 0:
            return [DraftBlock([], None, None) for _ in requests]
        hidden = self._block_hidden(requests)  # [R, B, H]
        first_row = 1 if self.zlab else 0  # z-lab: only mask rows predict
        num_max = max(nums)
        rows = hidden[:, first_row:first_row + num_max]  # [R, n, H]: row k drafts position s+k+1
        base = self._logits(rows)  # [R, n, V] fp32
        greedy = [is_greedy_request(r) for r in requests]
        markov, conf = self.model.markov_head, self.model.confidence_head
        if markov_native.use_native(self.markov_backend, markov, conf, rows):
            drafts = markov_native.markov_draft(markov, conf, base, rows, requests, nums, greedy)
        else:
            drafts = self._draft_torch(base, rows, requests, nums, greedy)
        return self._blocks(requests, nums, *drafts)

    def _draft_torch(self, base: torch.Tensor, rows: torch.Tensor, requests: list[ProposeRequest], nums: list[int],
                     greedy: list[bool]):
        """The Markov loop in torch (the reference of ``markov_native``): base fp32 [R, n, V], rows [R, n, H]
        -> (tokens int64 [R, n], q [nums[r], V] per request (None: greedy or no drafts), confidence
        logits fp32 [R, n] or None)."""
        markov, conf = self.model.markov_head, self.model.confidence_head
        greedy_t = torch.tensor(greedy, device=self.device)
        prev = torch.tensor([r.anchor_token_id for r in requests], dtype=torch.long, device=self.device)
        state = markov.init_state(len(requests), self.device, self.dtype) if markov is not None else None
        tokens, probs, conf_logits = [], [], []
        for k in range(base.shape[1]):
            z = base[:, k]
            if markov is not None:
                z, state = markov.step(z, rows[:, k], prev, state)
            if conf is not None:
                emb = markov.prev_embeddings(prev) if conf.with_markov else None
                conf_logits.append(conf(rows[:, k], emb))
            prev, p = draw_drafts(z, requests, greedy_t, [k < n for n in nums])
            tokens.append(prev)
            probs.append(p)
        qs = [torch.stack([probs[k][r] for k in range(n)]) if n > 0 and not g else None  # [n, V] fp32
              for r, (n, g) in enumerate(zip(nums, greedy))]
        return torch.stack(tokens, dim=1), qs, torch.stack(conf_logits, dim=1) if conf_logits else None

    def _block_hidden(self, requests: list[ProposeRequest]) -> torch.Tensor:
        hidden = self.graphs.forward(requests) if self.graphs is not None else None
        if hidden is not None:  # a replayed CUDA graph (runner/draft_graphs.py)
            return hidden
        anchors = torch.tensor([r.anchor_token_id for r in requests], dtype=torch.long, device=self.device)
        starts = torch.tensor([r.anchor_position for r in requests], dtype=torch.long, device=self.device)
        ctx = draft_attention(self.backend, requests, [r.anchor_position for r in requests], self.config.block_size,
                              self.block_size, self.kv_caches, self.attention_scale, self.device)
        return self.block_forward(anchors, starts, ctx)

    @property
    def attention_scale(self) -> float:
        return self.config.model.head_dim ** -0.5

    def block_forward(self, anchors: torch.Tensor, starts: torch.Tensor, ctx) -> torch.Tensor:
        """R blocks [anchor, mask x (B-1)] (anchors [R] long, anchor r at position starts[r] [R] long) through
        the layers and the final norm, attending through ``ctx`` -> [R, B, H]: what a draft graph captures."""
        dcfg, B = self.config, self.config.block_size
        ids = torch.full((anchors.shape[0], B), dcfg.mask_token_id, dtype=torch.long, device=self.device)
        ids[:, 0] = anchors
        x = self.embed_tokens(ids).to(self.dtype)  # [R, B, H]
        if dcfg.input_embedding_scale != 1.0:
            x = x * dcfg.input_embedding_scale
        q_pos = starts[:, None] + torch.arange(B, device=self.device)  # [R, B]
        masks = [DraftMask(*dcfg.layer_attention(i)) for i in range(dcfg.num_layers)]
        if self.native_stack is not None and self.native_stack.applies(x, ctx):
            return self.native_stack(x, q_pos, ctx, masks)
        return self.model.block_layers(x, q_pos, self.rotary, lambda i, q, k, v: ctx.forward(i, q, k, v, masks[i]))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden.to(input_dtype(self.lm_head))).float()
        dcfg = self.config
        if dcfg.output_multiplier != 1.0:
            logits = logits * dcfg.output_multiplier
        if dcfg.final_logit_softcapping:
            cap = dcfg.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _blocks(self, requests, nums, tokens: torch.Tensor, qs, conf_logits) -> list[DraftBlock]:
        token_ids = tokens.tolist()  # [R, n]
        confidences = None
        if conf_logits is not None:
            c = conf_logits.clone()  # [R, n]
            if self.confidence_temperatures is not None:
                temps = self.confidence_temperatures[:c.shape[1]]
                c[:, :len(temps)] = c[:, :len(temps)] / torch.tensor(temps, dtype=c.dtype, device=c.device)
            confidences = torch.sigmoid(c).tolist()
        return [DraftBlock(token_ids[r][:n], qs[r], confidences[r][:n] if confidences else None)
                for r, n in enumerate(nums)]
