"""Runs the target model for a StepPlan: one forward over all scheduled tokens, then sampling
(or, with drafts, verification). Holds the KV tensors and per-request generators; never sees a
Request object."""
from __future__ import annotations

import time

import torch

from sparkserve.attention.base import PagedAttentionContext
from sparkserve.attention.registry import get_backend
from sparkserve.runner.input_batch import flatten
from sparkserve.runner.kv_cache import allocate_kv_caches
from sparkserve.sample import RequestGenerators, Sampler
from sparkserve.step import SeqResult, StepPlan, StepResult


class ModelRunner:
    def __init__(self, model, num_blocks: int, block_size: int, backend: str = "auto", seed: int = 0):
        self.model = model
        cfg = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.block_size = block_size
        self.backend = get_backend(backend, self.device.type)
        self.kv_caches = allocate_kv_caches(cfg.num_hidden_layers, num_blocks, block_size, cfg.num_key_value_heads,
                                            cfg.head_dim, self.dtype, self.device)
        self.generators = RequestGenerators(self.device, seed)
        self.sampler = Sampler()

    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepResult:
        t0 = time.perf_counter()
        self.generators.drop(plan.finished_request_ids)
        if not plan.seqs:
            return StepResult()
        batch = flatten(plan, self.block_size, self.device)
        metadata = self.backend.build_metadata(batch.paged, self.device)
        ctx = PagedAttentionContext(self.backend, metadata, self.kv_caches, self.model.scale)
        t_fwd = time.perf_counter()
        hidden, _ = self.model(batch.input_ids, batch.positions, ctx)
        sample_idx = [i for i, s in enumerate(plan.seqs) if s.sample]
        rows = [batch.query_start[i + 1] - 1 for i in sample_idx]
        logits = self.model.compute_logits(hidden[rows]) if rows else None
        forward_time = time.perf_counter() - t_fwd
        results = [SeqResult(s.request_id) for s in plan.seqs]
        if rows:
            metas = [plan.seqs[i].sampling for i in sample_idx]
            gens = [None if m.temperature == 0 else self.generators.get(plan.seqs[i].request_id, m.seed)
                    for i, m in zip(sample_idx, metas)]
            out = self.sampler.sample(logits, metas, gens)
            for j, i in enumerate(sample_idx):
                results[i].new_token_ids = [out.token_ids[j]]
                if out.logprobs[j] is not None:
                    results[i].logprobs = [out.logprobs[j]]
        return StepResult(results, forward_time_s=forward_time, step_time_s=time.perf_counter() - t0)
