"""The engine: one step = schedule -> execute -> update. Offline API and server both drive it."""
from __future__ import annotations

import itertools
import logging

import torch

from sparkserve.config import EngineConfig
from sparkserve.errors import ContextLengthError, QueueFullError
from sparkserve.engine.output_processor import OutputProcessor, ParentRequest
from sparkserve.engine.spec_control import NoSpecControl, SpecControl
from sparkserve.engine.spec_stats import SpecStatsTracker
from sparkserve.engine.wire import EngineStats, RequestDelta, SpecEngineStats
from sparkserve.models.loader import load_model
from sparkserve.models.tokenizer import Tokenizer
from sparkserve.request import Request, RequestStatus
from sparkserve.runner.cuda_graphs import DEFAULT_MAX_TOKENS, GraphSettings, buckets_up_to
from sparkserve.runner.kv_cache import bytes_per_block, num_kv_blocks
from sparkserve.runner.model_runner import ModelRunner
from sparkserve.sampling_params import SamplingParams
from sparkserve.scheduler import Scheduler
from sparkserve.spec_decode.factory import build_proposer
from sparkserve.step import StepPlan, StepResult

log = logging.getLogger("sparkserve.engine")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(name)


class Engine:
    """Owns the scheduler, the runner and the output processor (single process, single thread)."""

    def __init__(self, config: EngineConfig):
        self.config = config
        mc = config.model
        device = resolve_device(mc.device)
        torch.manual_seed(mc.seed)
        set_cpu_threads(mc.num_threads, mc.model, device)
        if mc.tensor_parallel_size > 1:  # rank 0 of a tensor-parallel group; workers hold the other shards
            from sparkserve.distributed.driver import TensorParallelModel

            self.model, self.model_config = TensorParallelModel.start(config, device)
        else:
            self.model, self.model_config = load_model(mc.model, mc.dtype, device)
        self.model.fuse_for_inference(bf16_when_exact=mc.dtype == "auto")  # bf16 storage only where exact
        if device.type == "cpu" and not mc.enforce_eager:
            reason = self.model.capture_step()
            log.info("captured step: %s", "the layer stack runs as one native call" if reason is None
                     else f"off ({reason})")
        self.tokenizer = _load_tokenizer(mc.tokenizer or mc.model)
        self.eos_token_ids = self.tokenizer.eos_token_ids if self.tokenizer else _config_eos(self.model_config)
        sched = config.scheduler
        if sched.max_model_len > self.model_config.max_position_embeddings:
            raise ValueError(f"max_model_len {sched.max_model_len} exceeds the model's max_position_embeddings "
                             f"{self.model_config.max_position_embeddings}")
        per_block = bytes_per_block(self.model_config.num_hidden_layers, config.cache.block_size,
                                    self.model.config.num_key_value_heads, self.model_config.head_dim,  # per rank
                                    next(self.model.parameters()).dtype)
        self.num_blocks = num_kv_blocks(config.cache, sched, per_block)
        proposer, gamma = build_proposer(config.spec, self.model, self.num_blocks, config.cache.block_size,
                                         mc.attention_backend)
        if device.type == "cpu" and not mc.enforce_eager and hasattr(proposer, "capture_step"):
            reason = proposer.capture_step()
            log.info("captured draft step: %s", "the drafter's block layers run as one native call"
                     if reason is None else f"off ({reason})")
        graphs = GraphSettings(buckets=buckets_up_to(sched.max_num_seqs), max_model_len=sched.max_model_len,
                               max_tokens=min(sched.max_num_batched_tokens, DEFAULT_MAX_TOKENS))
        if mc.tensor_parallel_size > 1 and device.type == "cuda":
            log.info("CUDA graphs off: tensor parallelism (the workers run each step as told on their pipe)")
        self.runner = ModelRunner(self.model, self.num_blocks, config.cache.block_size, mc.attention_backend, mc.seed,
                                  proposer, gamma, enforce_eager=mc.enforce_eager or mc.tensor_parallel_size > 1,
                                  graphs=graphs)
        if mc.tensor_parallel_size > 1:
            self.model.drive(self.runner)  # every runner step is announced to the workers
        self.num_speculative_tokens = gamma
        # profiles the step-time curve with the runner (load-aware planners), before any request exists
        self.spec_control = NoSpecControl() if proposer is None else \
            SpecControl(config.spec, self.runner, proposer, gamma, mc.model, sched.max_num_batched_tokens,
                        sched.max_num_seqs)
        self.scheduler = Scheduler(sched, config.cache, self.num_blocks,
                                   verify_planner=self.spec_control.verify_planner,
                                   draft_switch=self.spec_control.decide_draft,
                                   needs_history=self.spec_control.needs_history)
        self.spec_stats = SpecStatsTracker()
        self.outputs = OutputProcessor(self.tokenizer, self.spec_stats)
        self._ids = itertools.count()
        self.num_steps = 0
        self.forward_time_s = 0.0  # total time inside model forwards (overhead accounting)

    # -- requests -------------------------------------------------------------------------------------
    def encode_prompt(self, prompt) -> tuple[str | None, list[int]]:
        """(prompt text or None, prompt token ids) from a string, token ids or a prompt dict."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model directory has no tokenizer; pass prompt token ids instead of text")
            return prompt, self.tokenizer.encode(prompt, add_special_tokens=True)
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), list(prompt["prompt_token_ids"])
            if "prompt" in prompt:
                return self.encode_prompt(prompt["prompt"])
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return None, list(prompt)
        raise ValueError("a prompt must be a string, a list of token ids, or {'prompt_token_ids': [...]}")

    def add_request(self, request_id: str | None, prompt, params: SamplingParams | None = None) -> str:
        """Queue a request: the engine's admission, the one place a request is validated (the
        scheduler trusts it). Raises ValueError (bad prompt/params; ``ContextLengthError`` is one) or
        ``QueueFullError``; either way nothing is queued."""
        params = params or SamplingParams()
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.outputs.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        text, ids = self.encode_prompt(prompt)
        self.validate_prompt(ids, params)
        room = self.config.scheduler.max_waiting - self.scheduler.num_waiting
        if params.n > room:  # all n children or none
            raise QueueFullError(f"the waiting queue is full ({self.config.scheduler.max_waiting} requests)")
        parent = ParentRequest(request_id, text, ids)
        children = []
        for i in range(params.n):
            child_params = params if params.n == 1 else _child_params(params, i)
            cid = request_id if params.n == 1 else f"{request_id}#{i}"
            req = Request(cid, ids, child_params, eos_token_ids=self.eos_token_ids,
                          max_model_len=self.config.scheduler.max_model_len)
            children.append(req)
        for i, req in enumerate(children):
            self.scheduler.add_request(req)
            self.outputs.add(parent, req.request_id, i, req)
        return request_id

    def validate_prompt(self, ids: list[int], params: SamplingParams) -> None:
        """Raises ValueError unless the prompt can run: not empty, in the vocabulary, within the
        context with ``max_tokens`` (``ContextLengthError``), and small enough for the whole KV cache."""
        if not ids:
            raise ValueError("the prompt is empty")
        vocab = self.model_config.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})")
        limit = self.config.scheduler.max_model_len
        want = len(ids) + (params.max_tokens or 1)
        if len(ids) >= limit or (params.max_tokens is not None and want > limit):
            raise ContextLengthError(f"this model's maximum context length is {limit} tokens; the prompt has {len(ids)} "
                                     f"tokens and max_tokens is {params.max_tokens} ({want} in total)")
        kv = self.scheduler.kv
        if kv.num_blocks_for(len(ids)) > kv.num_usable_blocks:
            raise ValueError(f"the prompt has {len(ids)} tokens but the KV cache holds only "
                             f"{kv.num_usable_blocks * self.config.cache.block_size} tokens")

    def abort(self, request_ids) -> list[RequestDelta]:
        """End requests (unknown or finished ids are ignored); their last deltas, finish reason "abort"."""
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        child_ids = [c for rid in request_ids for c in self.outputs.children_of(rid)]
        self.scheduler.abort(child_ids)
        outs, _ = self.outputs.process([], aborted=child_ids)
        return outs

    # -- the loop ---------------------------------------------------------------------------------------
    def step(self) -> list[RequestDelta]:
        """Schedule -> execute -> update. The plan is complete when it leaves the scheduler (the work,
        the drafts each sequence verifies with their confidences, whether to draft after the step)."""
        plan = self.scheduler.schedule()
        result = self.runner.execute(plan)
        updated = self.scheduler.update(plan, result)
        self._record(plan, result)
        outs, stopped = self.outputs.process(updated, {s.request_id: s.logprobs for s in result.seqs if s.logprobs})
        for request_id in stopped:  # stop strings match only after detokenizing: they end the request here
            self.scheduler.finish_request(request_id, RequestStatus.FINISHED_STOPPED)
        return outs

    def _record(self, plan: StepPlan, result: StepResult) -> None:
        """The step's statistics: engine counters, speculative-decoding counters, the spec control loop
        (cost table, draft gate, calibration drift)."""
        self.num_steps += 1
        self.forward_time_s += result.forward_time_s
        self.spec_stats.record(plan, result)
        self.spec_control.observe(plan, result)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def close(self) -> None:
        """Stop the tensor-parallel workers, if any (they also stop when this process exits)."""
        if self.config.model.tensor_parallel_size > 1:
            self.model.shutdown()

    def stats(self) -> EngineStats:
        """A snapshot (the engine core sends it with every step's deltas and in heartbeats)."""
        s = self.scheduler
        spec = None
        if self.num_speculative_tokens:
            spec = SpecEngineStats.build(self.spec_stats.total, self.spec_stats.verify_length_counts,
                                         self.spec_control.stats())
        return EngineStats(s.num_running, s.num_waiting, float(s.kv_usage), s.num_preemptions_total, self.num_blocks,
                           self.num_steps, spec)


def set_cpu_threads(num_threads: int | None, model_path: str, device: torch.device) -> None:
    """0/None: one thread for small models on CPU (their matmuls are too small to split, and a second
    busy thread on a shared 2-core box costs far more than it gains); torch's default otherwise."""
    if device.type != "cpu":
        return
    if num_threads:
        torch.set_num_threads(num_threads)
        return
    import os

    try:
        size = sum(os.path.getsize(os.path.join(model_path, f)) for f in os.listdir(model_path)
                   if f.endswith(".safetensors"))
    except OSError:
        return
    if size < 200 << 20:
        torch.set_num_threads(1)


def _child_params(params: SamplingParams, index: int) -> SamplingParams:
    from dataclasses import replace

    seed = None if params.seed is None else params.seed + index
    return replace(params, n=1, seed=seed)


def _load_tokenizer(path: str) -> Tokenizer | None:
    import os

    if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model")):
        log.warning("no tokenizer in %s: token-id prompts only, outputs carry no text", path)
        return None
    return Tokenizer(path)


def _config_eos(cfg) -> tuple[int, ...]:
    eos = cfg.eos_token_id
    return tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
