"""The Triton sampler and block verifier wired into ``Sampler`` and ``verify()`` (``sample/kernels.py``):
forced with ``backend="triton"`` (on a CPU under the interpreter), they emit the torch path's tokens for
the same per-request generators and leave every generator in the same state: greedy rows, seeded
sampling with top-k/top-p/min-p, verify blocks with accepts, rejections (residual draws) and bonus draws."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sparkserve.sample import Sampler, kernels  # noqa: E402
from sparkserve.spec_decode.verify import verify  # noqa: E402
from sparkserve.step import SamplingMeta  # noqa: E402
from tests.spec_decode.verify_batches import mixed_batch  # noqa: E402

METAS = [SamplingMeta(temperature=0.0, logprobs=2), SamplingMeta(temperature=0.7, top_k=20, top_p=0.8, seed=1),
         SamplingMeta(temperature=1.0, top_p=0.9), SamplingMeta(temperature=1.3, min_p=0.05),
         SamplingMeta(temperature=0.9, top_k=5, top_p=0.9, min_p=0.1, logprobs=1), SamplingMeta(temperature=0.0)]


def _generators(n: int, seed: int, device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(seed + i) for i in range(n)]


def _same_states(a, b) -> bool:
    return all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(a, b))


@pytest.mark.parametrize("metas", [METAS[:1] + METAS[-1:], METAS], ids=["greedy", "mixed"])
def test_sampler_triton_equals_torch(device, metas):
    g = torch.Generator().manual_seed(4)
    for step in range(2):  # the generators carry over: the second step draws from advanced streams
        logits = (torch.randn(len(metas), 200, generator=g) * 3).to(device)
        if step == 0:
            ref_gens, gens = _generators(len(metas), 10, device), _generators(len(metas), 10, device)
        ref = Sampler("torch").sample(logits, metas, ref_gens)
        out = Sampler("triton").sample(logits, metas, gens)
        assert out.token_ids == ref.token_ids
        assert out.logprobs == ref.logprobs
        assert _same_states(gens, ref_gens)


def test_verify_triton_equals_torch(device):
    logits, inputs = mixed_batch(128, seed=2, num_requests=8, max_drafts=4, logprobs_every=3)
    logits = logits.to(device)
    outputs = {}
    for backend in ("torch", "triton"):
        gens = _generators(len(inputs), 20, device)
        for inp, gen in zip(inputs, gens):
            inp.generator = gen
        outputs[backend] = (verify(logits, inputs, backend=backend), gens)
    (ref, ref_gens), (out, gens) = outputs["torch"], outputs["triton"]
    assert [(o.token_ids, o.num_accepted, o.logprobs) for o in out] == \
        [(o.token_ids, o.num_accepted, o.logprobs) for o in ref]
    assert _same_states(gens, ref_gens)
    drafts = [inp.num_draft_tokens for inp in inputs]
    assert any(0 < o.num_accepted for o in ref)  # accepts
    assert any(o.num_accepted < n for o, n in zip(ref, drafts))  # a rejection: residual draw
    assert any(o.num_accepted == n > 0 for o, n in zip(ref, drafts))  # all accepted: bonus draw
    assert any(inp.is_greedy and inp.num_draft_tokens for inp in inputs)


def test_choice(monkeypatch, device):
    logits = torch.zeros(2, 8, device=device)
    monkeypatch.delenv(kernels.ENV, raising=False)
    assert kernels.choose("triton", logits) == "triton"
    assert kernels.choose("torch", logits) == "torch"
    assert kernels.choose("auto", logits) == ("triton" if device == "cuda" else
                                               "native" if kernels.native.use_native("auto", logits) else "torch")
    monkeypatch.setenv(kernels.ENV, "triton")
    assert kernels.choose("auto", logits) == "triton"  # the override: a whole engine on the Triton path
    assert kernels.choose("torch", logits) == "torch"  # explicit names are not overridden
    monkeypatch.setenv(kernels.ENV, "bogus")
    with pytest.raises(ValueError, match="SPARKSERVE_SAMPLING_BACKEND"):
        kernels.choose("auto", logits)
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            kernels.choose("triton", logits)
