"""CUDA graphs for the target's uniform steps: decode (every sequence 1 new row) and full verify blocks
(every sequence 1 + gamma rows), over bucketed batch sizes.

Contract:
- **Capture at start** (``GraphRunner.capture``): for each query length q in ``query_lens`` and each bucket
  B in ``buckets`` with B * q <= ``max_tokens``, the model's forward over B sequences of q rows is captured
  once, on static buffers sized for the largest bucket: token ids and positions [T], the attention
  metadata (slot mapping [T] int64, block tables [B, W] int32, seq lens [B] int32, query start [B + 1]
  int32; W covers ``max_model_len``) and the outputs (hidden [T, H], captured features).
- **Replay while the batch fits** (``GraphRunner.forward``): a step whose n sequences all have the same
  q rows, q captured, n <= the largest bucket B with B * q captured, and every table within W, is copied
  into the smallest such bucket's buffers and replayed; anything else (prefill chunks, ragged verify
  lengths, bigger batches) returns None and the runner runs it eagerly.
- **Padding**: the B - n padding sequences have q rows each, at positions 0..q-1 (seq len q), token 0,
  block table all block 0 (the scheduler's reserved null block) and **slot -1**: the backend's K/V store
  skips negative slots, so padding writes no K/V, and every other op is row-wise or per sequence, so
  padding never changes a real row. Real rows get exactly the eager step's inputs.
- Outputs are clones of the real rows (the static outputs are overwritten by the next replay).

The capture mechanism is injectable (``GraphCapture``): ``CudaGraphCapture`` on a GPU, ``ReplayByCall``
elsewhere (tests: it replays by calling the recorded function again on the same static buffers, so the
static-buffer and padding logic runs on a CPU). A backend takes part through ``graph_metadata`` (fixed-shape
metadata over caller-owned buffers: the triton backend); without it the runner stays eager.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from sparkserve.attention.base import PagedAttentionContext
from sparkserve.attention.cpu_backend import block_table_tensor
from sparkserve.runner.input_batch import FlatBatch

log = logging.getLogger("sparkserve.runner")

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_MAX_TOKENS = 2048  # the largest captured forward, in rows


class GraphCapture(Protocol):
    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Capture ``fn`` (which reads and writes only static buffers); return its replay."""


class CudaGraphCapture:
    """``torch.cuda.CUDAGraph``: one warm-up call on a side stream (Triton compiles, cuBLAS picks its
    kernels), then the capture; all graphs share one memory pool (capture the largest first)."""

    def __init__(self) -> None:
        self.pool = None

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
        self.pool = graph.pool()
        return graph.replay


class ReplayByCall:
    """Stand-in for tests and CPUs: "replaying" calls the recorded function again on the same buffers."""

    def __init__(self) -> None:
        self.captured: list[Callable[[], None]] = []

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        fn()
        self.captured.append(fn)
        return fn


@dataclass(frozen=True)
class GraphSettings:
    """How a runner graphs its steps (``build``); ``--enforce-eager`` turns graphs off altogether."""

    capturer: GraphCapture | None = None  # None: CudaGraphCapture on a CUDA device, no graphs elsewhere
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_model_len: int | None = None  # the longest sequence (sizes the block tables); None: the model's limit
    query_lens: tuple[int, ...] | None = None  # rows per sequence to capture; None: 1 and 1 + gamma


def buckets_up_to(max_num_seqs: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The buckets below ``max_num_seqs``, then ``max_num_seqs`` itself (the largest batch the scheduler makes)."""
    return tuple(sorted({b for b in buckets if b < max_num_seqs} | {max_num_seqs}))


def build(runner, enforce_eager: bool, settings: GraphSettings) -> GraphRunner | None:
    """The runner's captured ``GraphRunner``, or None (eager): with ``enforce_eager``, on a non-CUDA device
    without an injected capturer, or (one log line) with an attention backend that cannot be graphed."""
    capturer = settings.capturer
    if enforce_eager or (capturer is None and runner.device.type != "cuda"):
        if enforce_eager and runner.device.type == "cuda":
            log.info("CUDA graphs off (enforce_eager): every step runs eagerly")
        return None
    reason = unsupported_reason(runner.backend)
    if reason is not None:
        log.info("CUDA graphs off: %s; every step runs eagerly", reason)
        return None
    query_lens = settings.query_lens or ((1, 1 + runner.gamma) if runner.gamma else (1,))
    return GraphRunner(runner.model, runner.backend, runner.kv_caches, runner.capture_ids, runner.block_size,
                       runner.device, capturer or CudaGraphCapture(), query_lens, settings.buckets,
                       settings.max_tokens, settings.max_model_len).capture()


def unsupported_reason(backend) -> str | None:
    """Why the runner cannot graph with this attention backend (None: it can)."""
    if not hasattr(backend, "graph_metadata"):
        return f"attention backend {backend.name!r} has no fixed-shape metadata (graph_metadata)"
    return None


class GraphRunner:
    """Captured forwards of ``model`` keyed by (bucket, q); ``forward(batch)`` replays or returns None."""

    def __init__(self, model, backend, kv_caches, capture_ids: tuple[int, ...], block_size: int,
                 device: torch.device, capturer: GraphCapture, query_lens: Sequence[int] = (1,),
                 buckets: Sequence[int] = DEFAULT_BUCKETS, max_tokens: int = DEFAULT_MAX_TOKENS,
                 max_model_len: int | None = None):
        self.model, self.backend, self.kv_caches, self.capture_ids = model, backend, kv_caches, capture_ids
        self.block_size, self.device, self.capturer = block_size, device, capturer
        self.shapes = sorted((b, q) for q in set(query_lens) for b in set(buckets) if b * q <= max_tokens)
        if not self.shapes:
            raise ValueError(f"no bucket fits max_tokens {max_tokens} (buckets {buckets}, query lens {query_lens})")
        self.width = -(-(max_model_len or model.config.max_position_embeddings) // block_size)  # W: table columns
        max_seqs = max(b for b, _ in self.shapes)
        max_rows = max(b * q for b, q in self.shapes)
        i32 = {"dtype": torch.int32, "device": device}
        self.input_ids = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_rows, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((max_rows,), -1, dtype=torch.long, device=device)
        self.block_tables = torch.zeros(max_seqs, self.width, **i32)
        self.seq_lens = torch.zeros(max_seqs, **i32)
        self.query_start_loc = torch.zeros(max_seqs + 1, **i32)
        self.hidden: torch.Tensor | None = None  # [max_rows, H], set by the first capture
        self.feats: torch.Tensor | None = None  # [max_rows, len(capture_ids) * H] or None
        self.replays: dict[tuple[int, int], Callable[[], None]] = {}
        self.replayed: Counter[tuple[int, int]] = Counter()  # (bucket, q) -> replays
        self.num_eager = 0  # steps that did not fit a graph

    def capture(self) -> GraphRunner:
        """Capture every (bucket, q), largest first (they share the capturer's memory pool)."""
        with torch.inference_mode():
            for b, q in sorted(self.shapes, key=lambda s: -s[0] * s[1]):
                self._fill_padding(b, q)
                self.replays[(b, q)] = self.capturer.capture(self._step_fn(b, q))
        log.info("CUDA graphs: captured %d forwards (batch buckets %s, rows per sequence %s)", len(self.replays),
                 sorted({b for b, _ in self.shapes}), sorted({q for _, q in self.shapes}))
        return self

    def _step_fn(self, b: int, q: int) -> Callable[[], None]:
        rows = b * q
        meta = self.backend.graph_metadata(self.slot_mapping[:rows], self.block_tables[:b], self.seq_lens[:b],
                                           self.query_start_loc[:b + 1], q)
        ctx = PagedAttentionContext(self.backend, meta, self.kv_caches, self.model.scale)

        def step() -> None:
            hidden, feats = self.model(self.input_ids[:rows], self.positions[:rows], ctx, self.capture_ids)
            if self.hidden is None:  # the first (largest) capture sizes the static outputs
                self.hidden = torch.empty(rows, hidden.shape[1], dtype=hidden.dtype, device=self.device)
                if feats is not None:
                    self.feats = torch.empty(rows, feats.shape[1], dtype=feats.dtype, device=self.device)
            self.hidden[:rows].copy_(hidden)
            if feats is not None:
                self.feats[:rows].copy_(feats)
        return step

    def bucket(self, num_seqs: int, q: int) -> int | None:
        """The smallest captured bucket for ``num_seqs`` sequences of ``q`` rows (None: none fits)."""
        return next((b for b, qq in self.shapes if qq == q and b >= num_seqs), None)

    def forward(self, batch: FlatBatch) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(hidden [T, H], feats or None) of a replayed step, or None when it must run eagerly."""
        paged = batch.paged
        lens = paged.query_lens
        q = lens[0] if lens else 0
        b = self.bucket(len(lens), q) if lens and all(n == q for n in lens) else None
        if b is None or max(paged.seq_lens) > self.width * self.block_size:
            self.num_eager += 1
            return None
        self._fill(batch, b, q)
        self.replays[(b, q)]()
        self.replayed[(b, q)] += 1
        rows = len(lens) * q
        feats = None if self.feats is None else self.feats[:rows].clone()
        return self.hidden[:rows].clone(), feats

    def _fill(self, batch: FlatBatch, b: int, q: int) -> None:
        """Real sequences first, then padding (module docstring) in the (b, q) views of the buffers."""
        paged, n = batch.paged, len(batch.paged.query_lens)
        rows = n * q
        self._fill_padding(b, q, first_seq=n)
        self.input_ids[:rows].copy_(batch.input_ids)
        self.positions[:rows].copy_(batch.positions)
        self.slot_mapping[:rows].copy_(batch.slot_mapping)
        tables = block_table_tensor(paged.block_tables)  # [n, longest table]
        w = min(tables.shape[1], self.width)  # columns past seq_len are never read, but keep them 0
        self.block_tables[:n, :w].copy_(tables[:, :w], non_blocking=True)
        self.block_tables[:n, w:].zero_()
        self.seq_lens[:n].copy_(torch.tensor(paged.seq_lens, dtype=torch.int32), non_blocking=True)

    def _fill_padding(self, b: int, q: int, first_seq: int = 0) -> None:
        """Sequences first_seq..b-1 become padding; the query starts of all b sequences are set."""
        start = first_seq * q
        self.input_ids[start:b * q].zero_()
        self.positions[start:b * q].copy_(torch.arange(q, device=self.device).repeat(b - first_seq))
        self.slot_mapping[start:b * q].fill_(-1)
        self.block_tables[first_seq:b].zero_()
        self.seq_lens[first_seq:b].fill_(q)
        self.query_start_loc[:b + 1].copy_(torch.arange(0, (b + 1) * q, q, dtype=torch.int32, device=self.device))
