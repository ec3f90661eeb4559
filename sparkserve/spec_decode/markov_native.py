"""The DSpark Markov refinement loop as one native call (``csrc/markov.cpp``,
``torch.ops.sparkserve.markov_draft``) and the switch between it and the torch reference
(``DSparkProposer._draft_torch`` in ``drafters/dspark.py``).

The kernel runs all gamma steps of a propose call for the whole batch: per step the head's low-rank
update (the same ATen products as ``heads.py``, on the same shapes and weight layouts), then one fused
pass per row over the vocabulary: z = base + W2 u, then argmax (greedy requests) or q = softmax(z / T)
and the draw. The logits z are bit-identical to the reference's in fp32 and bf16, so greedy drafts are
identical; q agrees to ~1e-6 relative (exp and the sums round differently), so a sampled draft is the
same unless its uniform falls within that rounding of a CDF boundary. Confidence logits come from one
product over all steps and agree with the per-step ones to the products' rounding.

Randomness stays in Python: ``draft_uniforms`` takes one U[0, 1) double per (sampled request, active
step) from the request's generator in the order the reference draws them, so a seeded request's
stream is the same with the kernel on or off.

``backend``: "torch" (the reference), "native" (raise when the kernel is unusable) or "auto" (native
when ``sparkserve.native.available()``, the tensors are on the CPU in fp32 / bf16 / fp16, and the
heads are the known ones). ``SPARKSERVE_NATIVE=0`` makes "auto" the torch reference.
"""
from __future__ import annotations

import torch
from torch import nn

from sparkserve import native
from sparkserve.layers import linear as cpu_linear
from sparkserve.spec_decode.heads import ConfidenceHead, GatedMarkovHead, MarkovHead, RNNMarkovHead
from sparkserve.spec_decode.types import ProposeRequest

BACKENDS = ("auto", "torch", "native")
NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HEAD_CODES = {MarkovHead: 1, GatedMarkovHead: 2, RNNMarkovHead: 3}  # csrc/markov.cpp HeadType; 0: no head


def _linear_kinds() -> dict[type, tuple[int, int]]:
    """Linear module class -> (csrc/markov.cpp LinearKind, its row limit) for the flavours layers/linear.py has."""
    kinds = {nn.Linear: (0, 0), cpu_linear.DualLayoutLinear: (1, cpu_linear.DUAL_LAYOUT_MAX_ROWS)}
    stream = getattr(cpu_linear, "StreamLinear", None)
    if stream is not None:
        kinds[stream] = (2, cpu_linear.STREAM_MAX_ROWS)
    return kinds


def supported(markov: MarkovHead | None, conf: ConfidenceHead | None, rows: torch.Tensor) -> bool:
    """Whether the kernel computes this drafter's loop: known head classes, linear modules of a known
    flavour (nn.Linear, DualLayoutLinear, StreamLinear), CPU tensors in a native dtype, no autograd,
    no forward hooks on the heads."""
    if rows.device.type != "cpu" or rows.dtype not in NATIVE_DTYPES or torch.is_grad_enabled():
        return False
    linears = [conf.proj] if conf is not None else []
    if markov is not None:
        if type(markov) not in HEAD_CODES:
            return False
        linears += [markov.markov_w2] + [getattr(markov, n) for n in ("gate_proj", "joint_proj") if hasattr(markov, n)]
    kinds = _linear_kinds()
    return all(type(m) in kinds for m in linears) and not _hooked(markov, conf)


def _hooked(*heads: nn.Module | None) -> bool:
    """Whether a forward hook watches the heads (e.g. ``train/drafter/rollouts.py`` records the raw
    confidence logits that way): the kernel calls no module, so those callers get the reference."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for h in heads if h is not None for m in h.modules())


def use_native(backend: str, markov: MarkovHead | None, conf: ConfidenceHead | None, rows: torch.Tensor) -> bool:
    if backend == "torch":
        return False
    if backend == "native":
        native.require()
        if not supported(markov, conf, rows):
            raise ValueError("the native Markov loop does not support this drafter (heads, device or dtype)")
        return True
    if backend != "auto":
        raise ValueError(f"backend {backend!r} not in {BACKENDS}")
    return supported(markov, conf, rows) and native.available()


def _linear(module: nn.Module | None) -> tuple[tuple[int, int], torch.Tensor | None, torch.Tensor | None,
                                                torch.Tensor | None]:
    """((kind, row limit), weight [out, in], weight_t [in, out] or None, bias or None) of a linear module."""
    if module is None:
        return (0, 0), None, None, None
    second = getattr(module, "weight_gemm", None) if hasattr(module, "weight_gemm") else getattr(module, "weight_t", None)
    return _linear_kinds()[type(module)], module.weight, second, module.bias  # StreamLinear: its fp32 GEMM copy


def draft_uniforms(requests: list[ProposeRequest], nums: list[int], greedy: list[bool], steps: int) -> torch.Tensor:
    """fp64 [R, steps]: U[0, 1) for every (sampled request r, step k < nums[r]), drawn as the reference
    draws them (step by step, one value per request in batch order). With one distinct generator per
    request the order across requests does not matter, and ``torch.rand(n)`` is n single draws."""
    uniforms = torch.zeros(len(requests), steps, dtype=torch.float64)
    sampled = [r for r, g in enumerate(greedy) if not g and nums[r] > 0]
    gens = [requests[r].generator for r in sampled]
    if all(g is not None for g in gens) and len({id(g) for g in gens}) == len(gens):
        for r, g in zip(sampled, gens):
            torch.rand(nums[r], dtype=torch.float64, generator=g, out=uniforms[r, :nums[r]])
        return uniforms
    for k in range(steps):  # shared or default generators: the reference's exact order
        for r in sampled:
            if k < nums[r]:
                uniforms[r, k] = torch.rand(1, dtype=torch.float64, generator=requests[r].generator).item()
    return uniforms


def markov_draft(markov: MarkovHead | None, conf: ConfidenceHead | None, base: torch.Tensor, rows: torch.Tensor,
                 requests: list[ProposeRequest], nums: list[int], greedy: list[bool]):
    """The loop natively. base fp32 [R, n, V], rows [R, n, H] (post-norm hidden rows of the n drafting
    positions). Returns (tokens int64 [R, n], q per request ([nums[r], V] fp32, None for greedy
    requests or nums[r] == 0), confidence logits fp32 [R, n] or None)."""
    steps = base.shape[1]
    probs_row, sampled = [], 0
    for g in greedy:
        probs_row.append(-1 if g else sampled)
        sampled += 0 if g else 1
    w1 = markov.markov_w1.weight if markov is not None else None
    w2_kind, w2, w2_t, _ = _linear(markov.markov_w2 if markov is not None else None)
    proj_kind, *proj = _linear(getattr(markov, "gate_proj", None) or getattr(markov, "joint_proj", None))
    conf_kind, *conf_lin = _linear(conf.proj if conf is not None else None)
    kinds = (w2_kind, proj_kind, conf_kind)
    tokens, probs, conf_logits = torch.ops.sparkserve.markov_draft(
        base.float().contiguous(), rows, torch.tensor([r.anchor_token_id for r in requests], dtype=torch.long),
        HEAD_CODES[type(markov)] if markov is not None else 0, w1, w2, w2_t, *proj, *conf_lin,
        conf is not None and conf.with_markov, [k for k, _ in kinds], [n for _, n in kinds],
        torch.tensor(greedy, dtype=torch.bool),
        torch.tensor([r.sampling.temperature for r in requests], dtype=torch.float32),
        torch.tensor(nums, dtype=torch.long), torch.tensor(probs_row, dtype=torch.long),
        draft_uniforms(requests, nums, greedy, steps))
    qs = [probs[s, :n] if s >= 0 and n > 0 else None for s, n in zip(probs_row, nums)]
    return tokens, qs, conf_logits if conf is not None else None
