"""CUDA graphs for the target's decode and verify steps (up to 1 + gamma rows per sequence), over bucketed
batch sizes.

Contract:
- **Capture at start** (``GraphRunner.capture``): for each row count Q in ``query_lens`` (1 and 1 + gamma)
  and each bucket B in ``buckets`` with B * Q <= ``max_tokens``, the model's forward over B sequences of Q
  rows is captured once, on static buffers sized for the largest: token ids and positions [T], the
  attention metadata (slot mapping [T] int64, block tables [B, W] int32, seq lens [B] int32, query start
  [B + 1] int32; W covers ``max_model_len``) and the outputs (hidden [T, H], captured features).
- **Replay while the batch fits** (``GraphRunner.forward``): a step of n sequences with q_i rows each is
  replayed in the smallest captured (B, Q) with B >= n and Q >= every q_i (decode steps: Q = 1; verify
  blocks, ragged lengths included, and short prefill chunks: Q = 1 + gamma), when every padded sequence
  still fits W; anything else (longer prefill chunks, bigger batches) returns None and runs eagerly.
- **Padding**: sequence i's rows sit at i * Q .. i * Q + q_i - 1 with exactly the eager step's inputs; its
  seq len becomes start_i + Q (start_i = tokens cached before the step), so real row j stays at position
  start_i + j and, attention being causal, sees exactly the keys it sees eagerly. Its Q - q_i padding rows
  and the B - n padding sequences (Q rows, seq len Q, all-0 block table: the scheduler's reserved null
  block) have token 0, positions 0..Q-1 (only rotary reads them) and **slot -1**: the backend's K/V store
  skips negative slots, so padding writes no K/V, and every other op is per row or per sequence (padding
  rows only ever attend, never are attended by real rows), so padding never changes a real row.
- Outputs are the real rows, copied out of the static outputs (the next replay overwrites those).

The capture mechanism is injectable (``GraphCapture``): ``CudaGraphCapture`` on a GPU, ``ReplayByCall``
elsewhere (tests: it replays by calling the recorded function again on the same static buffers, so the
static-buffer and padding logic runs on a CPU). A backend takes part through ``graph_metadata`` (fixed-shape
metadata over caller-owned buffers: the triton backend); without it the runner stays eager.

A DSpark/DFlash drafter's block forward is graphed the same way, over the same buckets, by
``runner/draft_graphs.py`` (built by the runner right after this one, on the same capturer and
so the same memory pool; it reuses ``GraphCapture``, ``GraphSettings``, ``wanted`` and ``unsupported_reason``,
and the backend's ``graph_draft_metadata``).
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
    if not wanted(runner.device, enforce_eager, settings):
        if enforce_eager and runner.device.type == "cuda":
            log.info("CUDA graphs off (enforce_eager): every step runs eagerly")
        return None
    reason = unsupported_reason(runner.backend)
    if reason is not None:
        log.info("CUDA graphs off: %s; every step runs eagerly", reason)
        return None
    query_lens = settings.query_lens or ((1, 1 + runner.gamma) if runner.gamma else (1,))
    return GraphRunner(runner.model, runner.backend, runner.kv_caches, runner.capture_ids, runner.block_size,
                       runner.device, settings.capturer or CudaGraphCapture(), query_lens, settings.buckets,
                       settings.max_tokens, settings.max_model_len).capture()


def wanted(device: torch.device, enforce_eager: bool, settings: GraphSettings) -> bool:
    """Graphs are wanted unless ``enforce_eager``, or on a non-CUDA device without an injected capturer."""
    return not enforce_eager and (settings.capturer is not None or device.type == "cuda")


def unsupported_reason(backend, metadata: str = "graph_metadata") -> str | None:
    """Why the runner cannot graph with this attention backend (None: it can); ``metadata``: the backend
    method that wraps fixed-shape buffers (``graph_draft_metadata`` for the drafter's graphs)."""
    if not hasattr(backend, metadata):
        return f"attention backend {backend.name!r} has no fixed-shape metadata ({metadata})"
    return None


class GraphRunner:
    """Captured forwards of ``model`` keyed by (bucket B, rows per sequence Q); ``forward(batch)`` replays
    or returns None."""

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
        self.num_ragged = 0  # replayed steps with some sequence shorter than Q rows (padded within)

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

    def bucket(self, num_seqs: int, max_rows: int) -> tuple[int, int] | None:
        """The smallest captured (B, Q) for ``num_seqs`` sequences of at most ``max_rows`` rows (None: none)."""
        fits = [(b * q, b, q) for b, q in self.shapes if b >= num_seqs and q >= max_rows]
        return min(fits)[1:] if fits else None

    def forward(self, batch: FlatBatch) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(hidden [T, H], feats or None) of a replayed step, or None when it must run eagerly."""
        paged = batch.paged
        lens = paged.query_lens
        shape = self.bucket(len(lens), max(lens)) if lens else None
        if shape is None or max(s - n for s, n in zip(paged.seq_lens, lens)) + shape[1] > self.width * self.block_size:
            self.num_eager += 1
            return None
        b, q = shape
        rows = self._fill(batch, b, q)
        self.replays[shape]()
        self.replayed[shape] += 1
        if rows is None:  # every sequence has Q rows: the real rows are the first n * Q
            rows = slice(0, len(lens) * q)
            return self.hidden[rows].clone(), None if self.feats is None else self.feats[rows].clone()
        self.num_ragged += 1
        return self.hidden.index_select(0, rows), None if self.feats is None else self.feats.index_select(0, rows)

    def _fill(self, batch: FlatBatch, b: int, q: int) -> torch.Tensor | None:
        """The step's sequences, then padding (module docstring), into the (b, q) views of the buffers.
        Returns the real rows' buffer indices [T] (None: they are 0..T-1)."""
        paged, n = batch.paged, len(batch.paged.query_lens)
        uniform = all(m == q for m in paged.query_lens)
        self._fill_padding(b, q, first_seq=n if uniform else 0)
        if uniform:
            rows = None
            self.input_ids[:n * q].copy_(batch.input_ids)
            self.positions[:n * q].copy_(batch.positions)
            self.slot_mapping[:n * q].copy_(batch.slot_mapping)
        else:
            rows = torch.tensor([i * q + j for i, m in enumerate(paged.query_lens) for j in range(m)],
                                dtype=torch.long).to(self.device, non_blocking=True)
            self.input_ids.index_copy_(0, rows, batch.input_ids)
            self.positions.index_copy_(0, rows, batch.positions)
            self.slot_mapping.index_copy_(0, rows, batch.slot_mapping)
        tables = block_table_tensor(paged.block_tables)  # [n, longest table]
        w = min(tables.shape[1], self.width)  # columns past seq_len are never read, but keep them 0
        self.block_tables[:n, :w].copy_(tables[:, :w], non_blocking=True)
        self.block_tables[:n, w:].zero_()
        padded_lens = [s - m + q for s, m in zip(paged.seq_lens, paged.query_lens)]  # start_i + Q
        self.seq_lens[:n].copy_(torch.tensor(padded_lens, dtype=torch.int32), non_blocking=True)
        return rows

    def _fill_padding(self, b: int, q: int, first_seq: int = 0) -> None:
        """Sequences first_seq..b-1 become padding; the query starts of all b sequences are set."""
        start = first_seq * q
        self.input_ids[start:b * q].zero_()
        self.positions[start:b * q].copy_(torch.arange(q, device=self.device).repeat(b - first_seq))
        self.slot_mapping[start:b * q].fill_(-1)
        self.block_tables[first_seq:b].zero_()
        self.seq_lens[first_seq:b].fill_(q)
        self.query_start_loc[:b + 1].copy_(torch.arange(0, (b + 1) * q, q, dtype=torch.int32, device=self.device))
