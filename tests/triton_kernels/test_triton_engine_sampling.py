"""The whole engine on the Triton sampling/verification path (``SPARKSERVE_SAMPLING_BACKEND=triton``, the
kernels interpreted on a CPU): seeded sampled outputs with DSpark speculation (verify blocks: accepts,
residual and bonus draws) and plain sampling equal the torch path's token for token. Attention runs on
the triton backend both times, so only the sampler and verifier differ."""
from __future__ import annotations

import pytest

pytest.importorskip("triton")
pytest.importorskip("transformers")  # builds the tiny target

from sparkserve import LLM, SamplingParams  # noqa: E402
from sparkserve.sample import kernels  # noqa: E402
from tests.spec_decode.spec_fixtures import spec_config, target_dir  # noqa: E402


def _generate(root, device, spec):
    params = [SamplingParams(temperature=0.8, top_k=20, top_p=0.9, seed=7, max_tokens=6, ignore_eos=True),
              SamplingParams(temperature=1.0, min_p=0.05, seed=8, max_tokens=6, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)]
    prompts = [{"prompt_token_ids": [5, 9, 13, 17, 5, 9, 13, 17]}, {"prompt_token_ids": [40, 41, 42]},
               {"prompt_token_ids": [7, 7, 8]}]
    llm = LLM(target_dir(root), max_model_len=64, dtype="float32", attention_backend="triton", device=device,
              speculative_config=spec)
    outs = llm.generate(prompts, params)
    return [o.outputs[0].token_ids for o in outs], llm


def _counted(fn, calls: dict, name: str):
    def call(*args):
        calls[name] += 1
        return fn(*args)
    return call


@pytest.mark.parametrize("method", [None, "dspark"])
def test_engine_triton_sampling_equals_torch(tmp_path, monkeypatch, device, method):
    root = str(tmp_path)
    spec = spec_config(method, root, gamma=3, verify="fixed") if method else None
    monkeypatch.setenv(kernels.ENV, "torch")
    want, _ = _generate(root, device, spec)
    monkeypatch.setenv(kernels.ENV, "triton")
    calls = {"triton_sample": 0, "triton_verify": 0}
    for name in calls:  # count the Triton calls (they still run)
        monkeypatch.setattr(kernels, name, _counted(getattr(kernels, name), calls, name))
    got, llm = _generate(root, device, spec)
    assert got == want
    assert calls["triton_verify" if method else "triton_sample"] > 0
    if method:
        assert llm.engine.spec_stats.total.num_verified_draft_tokens > 0
