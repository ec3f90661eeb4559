"""sparkserve's Triton kernels (the top-level ``triton_kernels/`` folder, installed as ``sparkserve_triton``).

The folder is a source root, not a package: ``pyproject.toml`` finds ``sparkserve_triton`` under it, so
nothing named ``triton_kernels`` is ever installed and the Triton project's own ``triton_kernels`` package
(which other projects import) cannot be shadowed. One kernel per module, each with a thin wrapper; the
reference each is tested against is the project's torch code (named in each module's docstring):

- ``paged_attention``: ragged target rows (decode, prefill chunks, verify blocks) over the paged cache.
- ``draft_attention``: a drafter's fresh block rows over their cached context plus the block.
- ``markov``: DSpark's Markov refinement z = b + W2 u (u = W1[prev] or the head's update).
- ``sampling``: temperature/top-k/top-p/min-p and the inverse-CDF draw, one program per row.
- ``verify``: lossless block verification (accept/reject, residual or bonus draw) per request.
- ``kv_store``: a step's K/V into the paged cache, rows with a negative slot skipped (CUDA-graph padding).

Kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before this package is imported), which is how CI tests them.
"""
from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``, read at import)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def check_device(*tensors: torch.Tensor) -> None:
    """Raise a clear error unless the kernels can run on these tensors (CUDA, or any device interpreted)."""
    if interpreting():
        return
    for t in tensors:
        if t.device.type != "cuda":
            raise ValueError(f"sparkserve_triton kernels need CUDA tensors (got one on {t.device}); on a CPU set "
                             "TRITON_INTERPRET=1 before importing them (tests) or use another backend")
