"""Which kernels run a sampling or verification call: the torch reference, the native CPU kernels
(``sample/native.py``) or the Triton kernels (``sparkserve_triton.sampling`` / ``.verify``).

``backend`` (``Sampler(backend=...)``, ``verify(..., backend=...)``):

- "auto": Triton when the tensor is on a CUDA device and the Triton kernels import; the native kernels on
  a CPU fp32/bf16/fp16 tensor when they built; else torch. ``SPARKSERVE_SAMPLING_BACKEND=<name>`` makes
  "auto" mean that backend instead (as ``SPARKSERVE_ATTENTION_BACKEND`` does for attention), so a whole
  engine can be run on one path (tests: the Triton path on a CPU under ``TRITON_INTERPRET=1``).
- "torch", "native": as ``sample/native.py`` says.
- "triton": force the Triton kernels; raises unless they import and the tensor is on CUDA or Triton
  runs interpreted (``TRITON_INTERPRET=1`` before the kernels are first imported).

Every path takes the same uniforms from the same per-request generators in the same order, so the
choice never changes a generator's stream (``sample/native.py`` states how close the tokens are).
"""
from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence

import torch

from sparkserve.sample import native
from sparkserve.sample.native import NATIVE_DTYPES

BACKENDS = ("auto", "torch", "native", "triton")
ENV = "SPARKSERVE_SAMPLING_BACKEND"


def choose(backend: str, tensor: torch.Tensor, native_dtypes: Sequence[torch.dtype] = NATIVE_DTYPES) -> str:
    """"torch", "native" or "triton" for ``backend`` on ``tensor`` (logits), per the module docstring."""
    if backend not in BACKENDS:
        raise ValueError(f"sampling backend {backend!r} not in {BACKENDS}")
    if backend == "auto":
        forced = os.environ.get(ENV, "").strip()
        if forced and forced != "auto":
            if forced not in BACKENDS:
                raise ValueError(f"{ENV}={forced!r} not in {BACKENDS}")
            backend = forced
    if backend == "triton":
        require_triton(tensor)
        return "triton"
    if backend == "auto" and tensor.device.type == "cuda" and triton_available():
        return "triton"
    return "native" if native.use_native(backend, tensor, native_dtypes) else "torch"


@functools.cache
def _triton_modules() -> tuple:
    """(sampling, verify) modules of ``sparkserve_triton``, or (None, the ImportError that stops them)."""
    try:
        return importlib.import_module("sparkserve_triton.sampling"), importlib.import_module("sparkserve_triton.verify")
    except ImportError as e:
        return None, e


def triton_available() -> bool:
    return _triton_modules()[0] is not None


def require_triton(tensor: torch.Tensor) -> tuple:
    """The (sampling, verify) Triton modules; raises a clear ValueError where they cannot run on ``tensor``."""
    mods = _triton_modules()
    if mods[0] is None:
        raise ValueError(f"sampling backend 'triton' needs triton (pip install -e '.[gpu]'): {mods[1]}")
    from sparkserve_triton import interpreting

    if tensor.device.type != "cuda" and not interpreting():
        raise ValueError(f"sampling backend 'triton' needs CUDA tensors (got {tensor.device}); on a CPU only under "
                         "TRITON_INTERPRET=1 (tests)")
    return mods


def triton_sample(logits: torch.Tensor, params, uniforms: torch.Tensor) -> torch.Tensor:
    """The Triton sampler: logits [N, V], ``SamplingTensors`` params, fp64 uniforms [N] -> int64 [N]
    (argmax on greedy rows, which ignore their uniform)."""
    sampling, _ = require_triton(logits)
    return sampling.sample(logits, *params, uniforms)


def triton_verify(target_logits: torch.Tensor, inputs) -> tuple[list[int], list[int]]:
    """The fused Triton block verifier: (num_accepted [B], recovered/bonus token [B]); it draws each request's
    uniforms exactly as the torch verifier does (``sparkserve_triton.verify``)."""
    _, verify = require_triton(target_logits)
    return verify.verify(target_logits, inputs)
