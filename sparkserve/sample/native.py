"""The native sampling kernels (``csrc/sampling.cpp``, ``torch.ops.sparkserve.sample_*``) and the
switch between them and the torch reference.

The kernels compute the same processed distribution (``processing.py``'s rules) and the same
inverse-CDF draw as the torch path, fused per row: no [N, V] intermediates, the top-k/top-p cut by
selection instead of a sort, and exp only over the surviving tokens. The randomness stays in Python:
callers draw the same uniforms from the same generators in the same order as the torch path and pass
them in, so a request's generator stream is identical with native on and off.

Agreement with the reference: the kept token sets are the same (every filter is an exact threshold
on fp32 z, except that top-p compares a cumulative mass, so a cut within fp32 rounding of
``top_p - TOP_P_TOL`` may fall on the other side); the probabilities agree to ~1e-6 relative (exp and
the sums round differently). The drawn token is therefore the same unless a uniform lands within
that rounding of a CDF boundary: measured 1 in 5000 draws over full 8192-token rows, none in 15000
draws with a top-k/top-p/min-p cut. ``draw_weights`` (``draw_indices`` natively) is bit-identical.

``backend``: "torch" (the reference), "native" (raise when the kernels are unusable) or "auto"
(native when ``sparkserve.native.available()`` and the tensor is a CPU fp32/bf16/fp16 tensor).
"""
from __future__ import annotations

from typing import Sequence

import torch

from sparkserve import native

BACKENDS = ("auto", "torch", "native", "triton")  # the choice among all three: ``sample/kernels.py``
NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def use_native(backend: str, tensor: torch.Tensor, dtypes: Sequence[torch.dtype] = NATIVE_DTYPES) -> bool:
    """Whether to run the kernel on ``tensor`` (logits or weights) for this ``backend``."""
    if backend in ("torch", "triton"):  # triton: ``sample/kernels.py`` chose the Triton kernels
        return False
    fits = tensor.device.type == "cpu" and tensor.dtype in dtypes
    if backend == "native":
        native.require()
        if not fits:
            raise ValueError(f"native sampling needs a CPU tensor of {dtypes}, got {tensor.dtype} on {tensor.device}")
        return True
    if backend != "auto":
        raise ValueError(f"backend {backend!r} not in {BACKENDS}")
    return fits and native.available()


def row_params(
    temperature: Sequence[float], top_k: Sequence[int], top_p: Sequence[float], min_p: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernels' per-row parameter tensors (fp32, int64, fp32, fp32), each [N], on CPU."""
    return (
        torch.tensor(temperature, dtype=torch.float32),
        torch.tensor(top_k, dtype=torch.int64),
        torch.tensor(top_p, dtype=torch.float32),
        torch.tensor(min_p, dtype=torch.float32),
    )


def _params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    dtypes = (torch.float32, torch.int64, torch.float32, torch.float32)
    return [p.to(device="cpu", dtype=d).contiguous() for p, d in zip(params, dtypes)]


def processed_probs(logits: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """``processed_logprobs(logits, *params).exp()`` natively: logits [N, V] -> fp32 [N, V]."""
    return torch.ops.sparkserve.sample_probs(logits.contiguous(), *_params(params))


def sample_tokens(logits: torch.Tensor, params: Sequence[torch.Tensor], uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row -> int64 [N]: argmax on greedy rows (temperature < GREEDY_EPS), else the draw
    with ``uniforms[r]`` (fp64 [N], ignored on greedy rows) from the processed distribution."""
    return torch.ops.sparkserve.sample_draw(logits.contiguous(), *_params(params),
                                            uniforms.to(device="cpu", dtype=torch.float64).contiguous())


def draw_weights(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """``draw_indices`` with given uniforms: weights [S, V] >= 0 (any float dtype) -> int64 [S]."""
    return torch.ops.sparkserve.sample_draw_weights(weights.contiguous(),
                                                    uniforms.to(device="cpu", dtype=torch.float64).contiguous())
