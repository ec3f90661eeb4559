"""Per-row sampling parameters as tensors, built from the step's ``SamplingMeta`` objects."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from sparkserve.step import SamplingMeta


class SamplingTensors(NamedTuple):
    """The arguments of ``processed_logprobs`` after the logits: ``processed_logprobs(logits, *t)``."""

    temperature: torch.Tensor  # [num_rows] fp32
    top_k: torch.Tensor  # [num_rows] int64, <= 0: off
    top_p: torch.Tensor  # [num_rows] fp32, 1: off
    min_p: torch.Tensor  # [num_rows] fp32, 0: off

    @classmethod
    def from_metas(
        cls,
        metas: Sequence[SamplingMeta],
        device: torch.device | str = "cpu",
        repeats: Sequence[int] | None = None,
    ) -> "SamplingTensors":
        """One row per meta, or ``repeats[i]`` consecutive rows for meta i.

        ``repeats`` expands per-request settings to per-token rows, e.g. ``1 + num_draft_tokens``
        verify rows per request.
        """
        if repeats is not None:
            if len(repeats) != len(metas):
                raise ValueError(f"repeats has {len(repeats)} entries for {len(metas)} metas")
            metas = [m for m, r in zip(metas, repeats) for _ in range(r)]
        return cls(
            temperature=torch.tensor([float(m.temperature) for m in metas], dtype=torch.float32, device=device),
            top_k=torch.tensor([int(m.top_k) for m in metas], dtype=torch.int64, device=device),
            top_p=torch.tensor([float(m.top_p) for m in metas], dtype=torch.float32, device=device),
            min_p=torch.tensor([float(m.min_p) for m in metas], dtype=torch.float32, device=device),
        )
