"""Runs the target model for a StepPlan: one forward over all scheduled tokens, then sampling or
lossless verification, then (with a drafter) the next draft blocks. Holds the KV tensors, the
per-request generators and the pending drafts' distributions q (``draft_probs.py``; the drafts
themselves are the scheduler's); never sees a Request object."""
from __future__ import annotations

import time

import torch

from sparkserve.attention.base import PagedAttentionContext
from sparkserve.attention.registry import get_backend
from sparkserve.layers.linear import weight_storage
from sparkserve.runner import cuda_graphs, spec_step
from sparkserve.runner.draft_probs import DraftProbs
from sparkserve.runner.input_batch import flatten
from sparkserve.runner.kv_cache import allocate_kv_caches
from sparkserve.runner.min_tokens import mask_early_stops
from sparkserve.runner.observe_buffer import ObserveBuffer
from sparkserve.sample import RequestGenerators, Sampler
from sparkserve.runner import draft_graphs
from sparkserve.spec_decode.types import Proposer
from sparkserve.step import SeqResult, StepPlan, StepResult


class ModelRunner:
    """``execute(plan) -> StepResult`` is its interface; ``block_size``, ``num_blocks``, ``gamma``,
    ``vocab_size`` and ``max_position_embeddings`` describe it to the step-time profiler, which builds
    synthetic plans (``spec_decode/profile.py``)."""

    def __init__(self, model, num_blocks: int, block_size: int, backend: str = "auto", seed: int = 0,
                 proposer: Proposer | None = None, num_speculative_tokens: int = 0, enforce_eager: bool = False,
                 graphs: cuda_graphs.GraphSettings | None = None):
        self.model = model
        cfg = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # activations and KV cache
        self.weight_dtypes = weight_storage(model)  # linear weights: "float32", "bfloat16" (bf16 storage), ...
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.vocab_size = cfg.vocab_size
        self.max_position_embeddings = cfg.max_position_embeddings
        self.backend = get_backend(backend, self.device.type)
        self.kv_caches = allocate_kv_caches(cfg.num_hidden_layers, num_blocks, block_size, cfg.num_key_value_heads,
                                            cfg.head_dim, self.dtype, self.device)
        self.generators = RequestGenerators(self.device, seed)
        self.sampler = Sampler()
        self.proposer = proposer
        self.gamma = num_speculative_tokens if proposer is not None else 0
        self.capture_ids = tuple(proposer.target_layer_ids) if proposer is not None else ()
        self.draft_probs = DraftProbs()
        self.observe_buffer = ObserveBuffer(proposer) if proposer is not None else None
        self.draft_time_s = 0.0
        # CUDA graphs of decode and verify steps; None: eager (a CPU, --enforce-eager, an ungraphable backend)
        settings = graphs or cuda_graphs.GraphSettings()
        self.graphs = cuda_graphs.build(self, enforce_eager, settings)
        # and of a DSpark/DFlash drafter's block forward, on the same capturer (runner/draft_graphs.py)
        self.draft_graphs = draft_graphs.build(proposer, enforce_eager, settings,
                                               self.graphs.capturer if self.graphs is not None else None)

    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepResult:
        t0 = time.perf_counter()
        self.generators.drop(plan.finished_request_ids)
        self.draft_probs.drop(plan.finished_request_ids)
        if not plan.seqs:
            return StepResult()
        batch = flatten(plan, self.block_size, self.device)
        t_fwd = time.perf_counter()
        hidden, feats = self._forward(batch)
        rows, sampled = spec_step.logit_rows(plan, batch)
        logits = self.model.compute_logits(hidden[rows]) if rows else None
        if rows:
            mask_early_stops(plan, sampled, logits)  # min_tokens: no stop token yet
        forward_time = time.perf_counter() - t_fwd
        results = [SeqResult(s.request_id) for s in plan.seqs]
        if rows and any(plan.seqs[i].num_draft_tokens for i in sampled):
            spec_step.verify_step(plan, sampled, logits, self.draft_probs, self.generators, results)
        elif rows:
            self._sample(plan, sampled, logits, results)
        if self.proposer is not None:
            t_draft = time.perf_counter()
            self._draft(plan, batch, feats, sampled, results)
            self.draft_time_s = time.perf_counter() - t_draft
            forward_time += self.draft_time_s
        return StepResult(results, forward_time_s=forward_time, step_time_s=time.perf_counter() - t0)

    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The target's forward: a replayed CUDA graph where the step fits one (``cuda_graphs.py``), else eager."""
        out = self.graphs.forward(batch) if self.graphs is not None else None
        if out is not None:
            return out
        metadata = self.backend.build_metadata(batch.paged, self.device)
        ctx = PagedAttentionContext(self.backend, metadata, self.kv_caches, self.model.scale)
        return self.model(batch.input_ids, batch.positions, ctx, self.capture_ids)

    def _sample(self, plan: StepPlan, sampled: list[int], logits: torch.Tensor, results: list[SeqResult]) -> None:
        metas = [plan.seqs[i].sampling for i in sampled]
        gens = [None if m.temperature == 0 else self.generators.get(plan.seqs[i].request_id, m.seed)
                for i, m in zip(sampled, metas)]
        out = self.sampler.sample(logits, metas, gens)
        for j, i in enumerate(sampled):
            results[i].new_token_ids = [out.token_ids[j]]
            if out.logprobs[j] is not None:
                results[i].logprobs = [out.logprobs[j]]

    def _draft(self, plan: StepPlan, batch, feats, sampled: list[int], results: list[SeqResult]) -> None:
        """Feed this step's target features to the drafter, then draft the next block per request.
        Without ``plan.draft`` (the draft gate) the features wait in ``observe_buffer`` until the
        next drafting step: the drafter's context cache must stay whole, but it is read only then."""
        nxt = spec_step.next_token_ids(plan, batch, results)
        self.observe_buffer.defer(feats, batch.input_ids, batch.positions, batch.slot_mapping, nxt)
        if not plan.draft:
            return
        self.observe_buffer.flush()
        reqs = spec_step.propose_requests(plan, sampled, results, self.gamma, self.generators)
        if not reqs:
            return
        blocks = self.proposer.propose([r for _, r in reqs])
        for (i, req), block in zip(reqs, blocks):
            self.draft_probs.store(req.request_id, block.probs)
            results[i].next_draft_token_ids = list(block.token_ids)
            results[i].next_draft_confidences = block.confidences
