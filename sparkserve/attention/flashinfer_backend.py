"""FlashInfer paged attention for target steps; drafting through the Triton draft kernel.

Planning is pure and testable without flashinfer (``plan_paged``): FlashInfer describes a batch by CSR
index arrays over the paged cache instead of block tables. For sequence b with ``seq_lens[b]`` keys:

- ``qo_indptr`` [B + 1]: prefix sums of the query lengths (the flat batch's row offsets);
- ``kv_indptr`` [B + 1]: prefix sums of the pages each sequence uses, ceil(seq_len / page_size);
- ``kv_indices`` [kv_indptr[-1]]: those pages, the first ones of each block table;
- ``kv_last_page_len`` [B]: keys in the last page, 1..page_size.

A step whose rows are all 1-token runs FlashInfer's paged decode; any other step runs its paged prefill
over all rows with ``causal=True`` (bottom-right aligned: query i of a sequence with q_len rows sees keys
<= seq_len - q_len + i, exactly ``attention/base.py``'s rule), so decode rows, prefill chunks and verify
blocks share one launch. The plan is made once per step, at the first layer's ``forward`` (it needs the
heads, head size and dtypes), and every later layer of the step reuses it.

Drafting (``forward_draft``) uses the Triton draft kernel (``triton_backend``): FlashInfer's paged prefill
aligns a non-causal query block to the end of the keys it attends, so a drafter's fresh rows (attended,
never written) would need a ragged second pass merged by log-sum-exp; not built yet.

Needs flashinfer-python and a CUDA device; ``registry.get_backend`` refuses it elsewhere. Written against
flashinfer-python 0.3.1.post1 (the ``gpu`` extra's pin; ``plan_call`` builds its ``plan()`` arguments and the
CPU tests bind them to that version's signatures). ``SPARKSERVE_FLASHINFER_PREFILL`` picks the paged prefill's
FlashInfer backend: ``auto`` (default: fa3 on Hopper, else fa2), ``fa2`` or ``fa3``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from sparkserve.attention.base import DraftBatch, DraftMask, PagedBatch

WORKSPACE_BYTES = 128 << 20  # FlashInfer's float workspace per wrapper
PREFILL_BACKEND_ENV = "SPARKSERVE_FLASHINFER_PREFILL"  # auto | fa2 | fa3


@dataclass
class PagedPlan:
    """FlashInfer's index arrays for one step (int32; host tensors from ``plan_paged``)."""

    qo_indptr: torch.Tensor  # [B + 1] row offsets of each sequence's new tokens
    kv_indptr: torch.Tensor  # [B + 1] offsets into kv_indices
    kv_indices: torch.Tensor  # [sum pages] physical pages of each sequence, in position order
    kv_last_page_len: torch.Tensor  # [B] keys in each sequence's last page, 1..page_size
    page_size: int
    all_decode: bool  # every sequence has exactly one new row: the decode kernel


def plan_paged(batch: PagedBatch) -> PagedPlan:
    """The index arrays of a target step (module docstring); raises when a table cannot hold its keys."""
    bs = batch.block_size
    qo, kv, indices, last = [0], [0], [], []
    for b, (q_len, seq_len, table) in enumerate(zip(batch.query_lens, batch.seq_lens, batch.block_tables)):
        if not 1 <= q_len <= seq_len:
            raise ValueError(f"sequence {b}: {q_len} new rows of {seq_len} positions")
        pages = -(-seq_len // bs)
        if len(table) < pages:
            raise ValueError(f"sequence {b}: {len(table)} blocks of {bs} cannot hold its {seq_len} positions")
        qo.append(qo[-1] + q_len)
        kv.append(kv[-1] + pages)
        indices.extend(table[:pages])
        last.append(seq_len - (pages - 1) * bs)
    as_int = lambda xs: torch.tensor(xs, dtype=torch.int32)
    return PagedPlan(as_int(qo), as_int(kv), as_int(indices), as_int(last), bs,
                     all_decode=all(n == 1 for n in batch.query_lens))


def wrapper_kwargs() -> tuple[dict, dict]:
    """Keyword arguments of the prefill and decode wrappers' constructors (after the workspace buffer)."""
    return {"kv_layout": "NHD", "backend": os.environ.get(PREFILL_BACKEND_ENV, "auto")}, {"kv_layout": "NHD"}


def plan_call(plan: PagedPlan, num_qo_heads: int, num_kv_heads: int, head_dim: int, q_dtype: torch.dtype,
              kv_dtype: torch.dtype, scale: float) -> tuple[tuple, dict]:
    """Positional and keyword arguments of the step's ``plan()``: the decode wrapper's (indptr, indices,
    last_page_len, heads, head_dim, page_size) when ``plan.all_decode``, else the prefill wrapper's
    (qo_indptr first) with ``causal=True``; keyword names as in flashinfer-python 0.3.1.post1."""
    kwargs = {"pos_encoding_mode": "NONE", "q_data_type": q_dtype, "kv_data_type": kv_dtype, "sm_scale": scale}
    pages = (plan.kv_indptr, plan.kv_indices, plan.kv_last_page_len)
    shape = (num_qo_heads, num_kv_heads, head_dim, plan.page_size)
    if plan.all_decode:
        return (*pages, *shape), kwargs
    return (plan.qo_indptr, *pages, *shape), {**kwargs, "causal": True}


@dataclass
class FlashInferMetadata:
    plan: PagedPlan  # host tensors: FlashInfer's plan reads the offsets on the host, copies the rest
    slot_mapping: torch.Tensor  # [T] int64 cache slot each new token writes
    planned: tuple | None = field(default=None)  # (heads, kv heads, head size, dtypes, scale) of the plan made


class FlashInferBackend:
    name = "flashinfer"

    def __init__(self):
        try:
            import flashinfer
        except ImportError as e:
            raise ValueError(f"attention backend 'flashinfer' needs flashinfer-python (pip install -e '.[gpu]'): "
                             f"{e}") from e
        from sparkserve.attention.triton_backend import TritonBackend

        self._flashinfer = flashinfer
        self._draft = TritonBackend()
        self._prefill = self._decode = None
        self._current: FlashInferMetadata | None = None  # whose plan the wrappers hold

    def build_metadata(self, batch: PagedBatch, device: torch.device) -> FlashInferMetadata:
        return FlashInferMetadata(plan_paged(batch),
                                  torch.tensor(batch.slot_mapping, dtype=torch.long).to(device, non_blocking=True))

    def _wrappers(self, device):
        if self._prefill is None:
            fi, (prefill_kwargs, decode_kwargs) = self._flashinfer, wrapper_kwargs()
            workspace = lambda: torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
            self._prefill = fi.BatchPrefillWithPagedKVCacheWrapper(workspace(), **prefill_kwargs)
            self._decode = fi.BatchDecodeWithPagedKVCacheWrapper(workspace(), **decode_kwargs)
        return self._prefill, self._decode

    def _plan(self, m: FlashInferMetadata, q, k_cache, scale: float):
        key = (q.shape[1], k_cache.shape[2], q.shape[2], q.dtype, k_cache.dtype, scale)
        prefill, decode = self._wrappers(q.device)
        wrapper = decode if m.plan.all_decode else prefill
        if self._current is m and m.planned == key:
            return wrapper
        args, kwargs = plan_call(m.plan, q.shape[1], k_cache.shape[2], q.shape[2], q.dtype, k_cache.dtype, scale)
        wrapper.plan(*args, **kwargs)
        self._current, m.planned = m, key
        return wrapper

    def forward(self, q, k, v, k_cache, v_cache, metadata: FlashInferMetadata, scale: float) -> torch.Tensor:
        self.write_kv(k, v, k_cache, v_cache, metadata.slot_mapping)
        wrapper = self._plan(metadata, q, k_cache, scale)
        return wrapper.run(q.contiguous(), (k_cache, v_cache))

    def write_kv(self, k, v, k_cache, v_cache, slot_mapping: torch.Tensor) -> None:
        self._draft.write_kv(k, v, k_cache, v_cache, slot_mapping)

    def build_draft_metadata(self, batch: DraftBatch, device: torch.device):
        return self._draft.build_draft_metadata(batch, device)

    def forward_draft(self, q, k, v, k_cache, v_cache, metadata, scale: float, mask: DraftMask) -> torch.Tensor:
        return self._draft.forward_draft(q, k, v, k_cache, v_cache, metadata, scale, mask)
