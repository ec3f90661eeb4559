"""The captured step (models/native_stack.py, csrc/decoder_stack.cpp) against the module path it replaces:
the same tokens and bit-identical logprobs, with plain decoding and with DSpark verify blocks (whose drafter
reads the captured layer features), plus when it applies and how --enforce-eager turns it off."""
from __future__ import annotations

import pytest
import torch

from sparkserve import cli, native
from sparkserve.assets import demo_drafter_path
from sparkserve.engine.llm import LLM
from sparkserve.sampling_params import SamplingParams
from sparkserve.server.launch import settings_from_args

PROMPTS = ["Question: Tom has 3 apples and buys 4 more. How many apples does he have?",
           "def add(a, b):", "Question: A box holds 12 pens. How many pens are in 5 boxes?"]


@pytest.fixture(scope="module", autouse=True)
def kernels():
    if not native.enabled_by_env():
        pytest.skip("SPARKSERVE_NATIVE=0: the kernels are forced off")
    native.require()


def run(llm: LLM, temperature: float = 0.0):
    params = SamplingParams(max_tokens=40, temperature=temperature, seed=7, logprobs=3)
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in llm.generate(PROMPTS, params)]


@pytest.mark.parametrize("spec", [None, "dspark"])
def test_captured_step_equals_the_module_path(spec):
    kwargs = dict(num_threads=1, max_num_seqs=4)
    if spec:
        kwargs["speculative_config"] = {"method": "dspark", "model": demo_drafter_path(), "verify": "fixed"}
    eager, captured = LLM(None, enforce_eager=True, **kwargs), LLM(None, **kwargs)
    assert eager.engine.model.native_stack is None and captured.engine.model.native_stack is not None
    if spec:  # the drafter's block layers are captured too
        assert eager.engine.runner.proposer.native_stack is None
        assert captured.engine.runner.proposer.native_stack is not None
    for temperature in (0.0, 0.8):
        assert run(captured, temperature) == run(eager, temperature)  # tokens and logprobs, exactly


def test_stack_applies_only_to_the_native_paged_backend():
    llm = LLM(None, num_threads=1, attention_backend="torch")
    stack = llm.engine.model.native_stack
    assert stack is not None
    x = torch.zeros(2, llm.engine.model.config.hidden_size)
    from sparkserve.attention.base import DenseCausalContext
    assert not stack.applies(x, DenseCausalContext(1, 2, 1.0))  # training / reference context: modules
    with torch.no_grad():
        llm.generate(PROMPTS[:1], SamplingParams(max_tokens=4, temperature=0.0))  # torch backend: modules, works


def test_enforce_eager_flag_reaches_the_engine_config():
    parser = cli.build_parser("launch")
    on = settings_from_args(parser.parse_args(["launch", "--enforce-eager"]))
    off = settings_from_args(parser.parse_args(["launch"]))
    assert on.engine_kwargs["enforce_eager"] is True and off.engine_kwargs["enforce_eager"] is False
