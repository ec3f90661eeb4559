"""CUDA graphs for a DSpark/DFlash drafter's block forward (``DSparkProposer.block_forward``: the block rows
through the draft layers and the final norm), over the target's batch buckets; the drafter's counterpart of
``runner/cuda_graphs.py``, whose capture mechanism (``GraphCapture``), settings and gating it reuses.

Contract:
- **Capture at start** (``build``, from the runner right after the target's graphs, sharing their capturer
  and so their memory pool): for each bucket R in ``settings.buckets`` with R * B <= ``settings.max_tokens``
  (B = the drafter's block size), ``block_forward`` over R requests is captured once, on static buffers
  sized for the largest: anchors and anchor positions [R] int64, block tables [R, W] int32 (W covers
  ``max_model_len``), context lens [R] int32 (= the anchor positions: the context is every position before
  the anchor), and the output hidden [R, B, H]; attention metadata from the backend's
  ``graph_draft_metadata`` over those buffers (the triton backend; without it the drafter stays eager).
- **Replay while the call fits** (``DraftGraphRunner.forward``): a propose call of n requests replays the
  smallest bucket R >= n when every request's context fits W (and its own table); otherwise it returns None
  and the proposer runs eagerly. Only the block forward is graphed: lm_head, the Markov loop and the
  draws (per request, with generators) run eagerly on its output.
- **Padding**: requests n..R-1 get anchor 0 at position 0, context length 0 and an all-0 block table (the
  scheduler's reserved null block). A draft call writes no K/V at all, and with context length 0 a padding
  request reads no cache entry, only its own fresh rows; every other op is per row or per request, so
  padding never changes a real request's rows, and its rows are discarded.
- The output is a view of the static hidden [:n], valid until the next replay (``propose`` consumes it
  right away).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from sparkserve.attention.base import DraftAttentionContext
from sparkserve.attention.cpu_backend import block_table_tensor
from sparkserve.runner.cuda_graphs import CudaGraphCapture, GraphCapture, GraphSettings, unsupported_reason, wanted
from sparkserve.spec_decode.drafters.dspark import DSparkProposer
from sparkserve.spec_decode.types import ProposeRequest

log = logging.getLogger("sparkserve.spec_decode")


def build(proposer, enforce_eager: bool, settings: GraphSettings,
          capturer: GraphCapture | None = None) -> DraftGraphRunner | None:
    """Capture a DSpark/DFlash proposer's block forward and install it (``proposer.graphs``); None (eager):
    another drafter or none, graphs not wanted (``cuda_graphs.wanted``), or (one log line) an attention
    backend without ``graph_draft_metadata``. ``capturer``: the target's (one memory pool for all graphs);
    default ``settings.capturer``, else ``CudaGraphCapture``."""
    if not isinstance(proposer, DSparkProposer) or not wanted(proposer.device, enforce_eager, settings):
        return None
    reason = unsupported_reason(proposer.backend, "graph_draft_metadata")
    if reason is not None:
        log.info("CUDA graphs of the draft step off: %s; the drafter runs eagerly", reason)
        return None
    proposer.graphs = DraftGraphRunner(proposer, capturer or settings.capturer or CudaGraphCapture(),
                                       settings.buckets, settings.max_tokens, settings.max_model_len).capture()
    return proposer.graphs


class DraftGraphRunner:
    """Captured ``block_forward`` of ``proposer`` keyed by bucket R; ``forward(requests)`` replays or returns
    None."""

    def __init__(self, proposer, capturer: GraphCapture, buckets: Sequence[int], max_tokens: int,
                 max_model_len: int | None = None):
        self.proposer, self.capturer = proposer, capturer
        rows = proposer.config.block_size  # B: rows per request
        self.buckets = sorted(b for b in set(buckets) if b * rows <= max_tokens)
        if not self.buckets:
            raise ValueError(f"no bucket fits max_tokens {max_tokens} (buckets {buckets}, {rows} rows per request)")
        longest = max_model_len or proposer.config.model.max_position_embeddings
        self.width = -(-longest // proposer.block_size)  # W: table columns
        max_reqs, dev = self.buckets[-1], proposer.device
        self.anchor_and_start = torch.zeros(2, max_reqs, dtype=torch.long, device=dev)  # [anchor ids; positions]
        self.block_tables = torch.zeros(max_reqs, self.width, dtype=torch.int32, device=dev)
        self.context_lens = torch.zeros(max_reqs, dtype=torch.int32, device=dev)
        self.hidden: torch.Tensor | None = None  # [max_reqs, B, H], set by the first capture
        self.replays: dict[int, Callable[[], None]] = {}
        self.replayed: Counter[int] = Counter()  # bucket -> replays
        self.num_eager = 0  # propose calls that did not fit a graph

    def capture(self) -> DraftGraphRunner:
        """Capture every bucket, largest first (they share the capturer's memory pool), on padding only."""
        with torch.inference_mode():
            for b in reversed(self.buckets):
                self._fill_padding(0, b)
                self.replays[b] = self.capturer.capture(self._step_fn(b))
        log.info("CUDA graphs: captured %d draft block forwards (request buckets %s)", len(self.replays),
                 self.buckets)
        return self

    def _step_fn(self, b: int) -> Callable[[], None]:
        p = self.proposer
        meta = p.backend.graph_draft_metadata(self.block_tables[:b], self.context_lens[:b], p.config.block_size)
        ctx = DraftAttentionContext(p.backend, meta, p.kv_caches, p.attention_scale)

        def step() -> None:
            hidden = p.block_forward(self.anchor_and_start[0, :b], self.anchor_and_start[1, :b], ctx)
            if self.hidden is None:  # the first (largest) capture sizes the static output
                self.hidden = torch.empty(b, *hidden.shape[1:], dtype=hidden.dtype, device=hidden.device)
            self.hidden[:b].copy_(hidden)
        return step

    def bucket(self, num_requests: int) -> int | None:
        """The smallest captured bucket holding ``num_requests`` (None: none)."""
        return next((b for b in self.buckets if b >= num_requests), None)

    def forward(self, requests: list[ProposeRequest]) -> torch.Tensor | None:
        """Post-norm block hidden [n, B, H] of a replayed call (a view, valid until the next replay), or None
        when the call must run eagerly."""
        b = self.bucket(len(requests)) if requests else None
        bs = self.proposer.block_size
        if b is None or any(r.anchor_position > min(len(r.block_ids), self.width) * bs for r in requests):
            self.num_eager += 1  # too many requests, or a context past W (or past its table: eager raises)
            return None
        self._fill(requests, b)
        self.replays[b]()
        self.replayed[b] += 1
        return self.hidden[:len(requests)]

    def _fill(self, requests: list[ProposeRequest], b: int) -> None:
        """The call's requests, then padding (module docstring), into the bucket's views of the buffers."""
        n = len(requests)
        host = torch.tensor([[r.anchor_token_id for r in requests], [r.anchor_position for r in requests]])
        self.anchor_and_start[:, :n].copy_(host, non_blocking=True)
        self.context_lens[:n].copy_(self.anchor_and_start[1, :n])  # context: every position before the anchor
        tables = block_table_tensor([r.block_ids for r in requests])  # [n, longest table]
        w = min(tables.shape[1], self.width)  # columns past a context are never read, but keep them 0
        self.block_tables[:n, :w].copy_(tables[:, :w], non_blocking=True)
        self.block_tables[:n, w:].zero_()
        self._fill_padding(n, b)

    def _fill_padding(self, first: int, b: int) -> None:
        """Requests first..b-1 become padding: anchor 0 at position 0, no context, the null block's table."""
        self.anchor_and_start[:, first:b].zero_()
        self.context_lens[first:b].zero_()
        self.block_tables[first:b].zero_()
