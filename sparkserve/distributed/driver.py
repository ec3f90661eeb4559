"""Rank 0 of a tensor-parallel engine: ``TensorParallelModel`` is the engine's model.

It starts one worker process per other rank (``worker.py``), holds rank 0's shard, and forwards the
model interface the engine, runner and drafter use: each forward first announces the step (token ids,
positions, the paged-attention inputs recorded when the runner built its metadata) on every worker's
pipe, then runs rank 0's shard, whose collectives meet the workers'. Logits come back whole on rank 0
(vocab-parallel gather); sampling, verification and the drafter stay on rank 0.

A dead worker is found before each step (its exit code) or by the collective that waits on it (gloo fails
at once when the peer's socket closes; otherwise the group's timeout): the engine then raises
``TensorParallelError`` naming the rank, stops the other workers and leaves the group.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
import weakref

import torch
import torch.distributed as dist
from torch import nn

from sparkserve.distributed.group import close_group, collective_timeout_s, init_group, open_store, rank_device
from sparkserve.distributed.worker import load_shard, worker_main

log = logging.getLogger("sparkserve.distributed")
MODEL_DRAFTERS = ("dspark", "dflash", "eagle3")  # drafters that take the target's full lm_head


class TensorParallelError(RuntimeError):
    """A tensor-parallel rank died or a collective failed: the engine cannot continue."""


class _StepRecorder:
    """The runner's attention backend, recording each step's paged inputs for the workers."""

    def __init__(self, backend, owner: "TensorParallelModel", world: int):
        self._backend, self._owner = backend, owner
        self.name = f"{backend.name}, tensor parallel {world}"  # the cost table's key tells TP sizes apart

    def build_metadata(self, batch, device):
        self._owner.pending_batch = batch
        return self._backend.build_metadata(batch, device)

    def __getattr__(self, name):
        return getattr(self._backend, name)


class TensorParallelModel(nn.Module):
    """Rank 0's shard plus the workers: the DecoderForCausalLM interface the engine uses (see module doc).

    ``config`` is the rank's (its share of heads and KV heads, so the runner's KV cache holds only those);
    ``lm_head`` is the full head for a drafter that takes the target's (kept only when one does)."""

    def __init__(self, shard, full_head: torch.Tensor | None, procs: list, conns: list):
        super().__init__()
        self.shard = shard
        self.procs, self.conns = procs, conns
        head = None
        if full_head is not None:  # not a submodule: the shard's parameters are the model's
            head = nn.Linear(full_head.shape[1], full_head.shape[0], bias=False, device="meta")
            head.weight = nn.Parameter(full_head, requires_grad=False)
        self.__dict__["full_head"] = head
        self.pending_batch = None
        self.kv_shape: tuple[int, int] | None = None
        self.native_stack = None
        self._stopped = False
        self._finalizer = weakref.finalize(self, _stop_workers, procs, conns)

    # -- start ------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, config, device: torch.device):
        """Start workers 1..N-1, join the group as rank 0 and load rank 0's shard. Returns (model, full
        DecoderConfig). Raises ValueError for sizes that do not divide, TensorParallelError if a worker fails."""
        from sparkserve.distributed.sizes import check_tensor_parallel
        from sparkserve.models.hf_config import DecoderConfig

        mc, world = config.model, config.model.tensor_parallel_size
        check_tensor_parallel(DecoderConfig.from_file(mc.model), world)
        if device.type == "cuda" and torch.cuda.device_count() < world:
            raise ValueError(f"tensor_parallel_size {world} needs {world} GPUs; this machine has "
                             f"{torch.cuda.device_count()}")
        store = open_store(world)
        ctx = multiprocessing.get_context("spawn")
        procs, conns = [], []
        for rank in range(1, world):
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=worker_main, name=f"sparkserve-tp{rank}", daemon=True,
                            args=(rank, world, mc, rank_device(device, rank), store.port, torch.get_num_threads(),
                                  theirs, os.getpid()))
            p.start()
            theirs.close()
            procs.append(p)
            conns.append(ours)
        try:
            _await(procs, conns, "hello")
            init_group(store, 0, world, rank_device(device, 0))
            shard, cfg, full_head = load_shard(mc, 0, world, rank_device(device, 0),
                                               keep_full_head=config.spec.method in MODEL_DRAFTERS)
            _await(procs, conns, "ready")
        except BaseException:
            _stop_workers(procs, conns)
            close_group()
            raise
        log.info("tensor parallel: %d ranks (%s), this process is rank 0", world, dist.get_backend())
        return cls(shard, full_head, procs, conns), cfg

    def drive(self, runner) -> None:
        """Route ``runner``'s steps through the group: its metadata builds are recorded for the workers."""
        runner.backend = _StepRecorder(runner.backend, self, len(self.procs) + 1)

    # -- the model interface ------------------------------------------------------------------------------
    @property
    def config(self):
        return self.shard.config

    @property
    def model(self):
        return self.shard.model

    @property
    def lm_head(self):
        head = self.__dict__["full_head"]
        return self.shard.lm_head if head is None else head

    @property
    def scale(self) -> float:
        return self.shard.scale

    @property
    def rotary(self):
        return self.shard.rotary

    def fuse_for_inference(self, bf16_when_exact: bool = False) -> "TensorParallelModel":
        self.shard.fuse_for_inference(bf16_when_exact)
        return self

    def capture_step(self) -> str | None:
        return "tensor parallel (the sharded layers run as modules, with their collectives)"

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn, capture_layer_ids: tuple[int, ...] = ()):
        if self.kv_shape is None:
            self.kv_shape = tuple(attn.kv_caches[0][0].shape[:2])
        self._send(("forward", input_ids.tolist(), positions.tolist(), self.pending_batch, self.kv_shape))
        return self._guard(self.shard, input_ids, positions, attn, capture_layer_ids)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.contiguous()
        self._send(("logits", tuple(rows.shape), rows.dtype))

        def run() -> torch.Tensor:
            dist.broadcast(rows, src=0)
            return self.shard.compute_logits(rows)

        return self._guard(run)

    # -- failures and shutdown ------------------------------------------------------------------------------
    def _send(self, msg) -> None:
        if self._stopped:
            raise TensorParallelError("the tensor-parallel group was stopped after a failure")
        if any(p.exitcode is not None for p in self.procs):
            self._fail(None)
        try:
            for conn in self.conns:
                conn.send(msg)
        except OSError as e:
            self._fail(e)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # a collective failed: a peer died, or the timeout passed
            self._fail(e)

    def _fail(self, cause: BaseException | None):
        deadline = time.monotonic() + 5.0  # a killed worker's exit code shows once it is reaped
        while time.monotonic() < deadline and all(p.exitcode is None for p in self.procs):
            time.sleep(0.05)
        dead = [f"rank {r} (exit code {p.exitcode})" for r, p in enumerate(self.procs, 1) if p.exitcode is not None]
        what = f"worker {', '.join(dead)} died" if dead else \
            f"a collective failed or timed out ({collective_timeout_s():.0f} s; SPARKSERVE_TP_TIMEOUT_S)"
        self.shutdown()
        raise TensorParallelError(f"tensor parallelism: {what}; the engine cannot continue"
                                  + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")) from cause

    def shutdown(self) -> None:
        """Stop the workers and leave the process group (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._finalizer()
        close_group()


def _await(procs: list, conns: list, what: str) -> None:
    """Wait for each worker's ``what`` message; a worker's error or death raises TensorParallelError."""
    deadline = time.monotonic() + max(collective_timeout_s(), 300.0)  # loading a large shard takes a while
    for rank, (p, conn) in enumerate(zip(procs, conns), 1):
        while not conn.poll(0.1):
            if p.exitcode is not None:
                raise TensorParallelError(f"tensor-parallel worker rank {rank} exited (code {p.exitcode}) "
                                          "while starting")
            if time.monotonic() > deadline:
                raise TensorParallelError(f"tensor-parallel worker rank {rank} did not start in time")
        try:
            kind, detail = conn.recv()
        except EOFError:
            p.join(timeout=5.0)
            raise TensorParallelError(f"tensor-parallel worker rank {rank} exited (code {p.exitcode}) "
                                      "while starting") from None
        if kind == "error":
            raise TensorParallelError(f"tensor-parallel worker rank {rank} failed to start: {detail}")
        if kind != what:
            raise TensorParallelError(f"tensor-parallel worker rank {rank} sent {kind!r}, expected {what!r}")


def _stop_workers(procs: list, conns: list) -> None:
    for conn in conns:
        try:
            conn.send(("stop",))
        except OSError:
            pass
        conn.close()
    for p in procs:
        p.join(timeout=5.0)
        if p.exitcode is None:
            p.kill()
            p.join(timeout=5.0)
