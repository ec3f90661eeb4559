"""The drafters shipped with the demo model: DeepSpec key names, load through --speculative-config,
greedy output with each equals plain greedy output token for token, and each keeps its measured mean
acceptance length (DSpark's Markov head lifts it above DFlash's).
`sparkserve launch` without --model serves the demo model with the DSpark drafter on."""
import json
import os

import pytest
from safetensors import safe_open

from sparkserve import LLM, SamplingParams
from sparkserve.assets import DEMO_MODEL_DIR, demo_drafter_path, demo_speculative_config
from sparkserve.spec_decode.checkpoint import read_calibration

METHODS = ("dspark", "dflash", "eagle3")
# Mean acceptance length tau = emitted / rounds on the 6 prompts x 48 greedy tokens below, measured
# (deterministic: greedy, one thread): dspark 1.942 (266/137), dflash 1.804 (267/148), eagle3 1.618
# (267/165). Thresholds sit ~5% below. DSpark without its Markov bias measures 1.727: below its
# threshold and below DFlash.
MIN_TAU = {"dspark": 1.85, "dflash": 1.72, "eagle3": 1.54}


def prompts(n_per_domain: int) -> list[str]:
    out = []
    for domain in ("math", "code", "chat"):
        with open(os.path.join(DEMO_MODEL_DIR, f"demo-{domain}.jsonl")) as f:
            out += [json.loads(line)["turns"][0] for line in f][:n_per_domain]
    return out


@pytest.fixture(scope="module")
def greedy_reference():
    llm = LLM(max_model_len=1024, num_threads=1)
    texts = [llm.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts(2)]
    outs = llm.generate(texts, SamplingParams(temperature=0, max_tokens=48))
    return texts, [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("method", METHODS)
def test_shipped_drafter_keys_and_size(method):
    path = demo_drafter_path(method)
    assert path is not None, f"the {method} demo drafter is not shipped"
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "layers.0.self_attn.q_proj.weight" in keys and not any(k.startswith("model.") for k in keys)
    assert "fc.weight" in keys and "embed_tokens.weight" not in keys  # slim: vocab tensors come from the target
    if method == "dspark":
        assert any(k.startswith("markov_head.") for k in keys) and any(k.startswith("confidence_head.") for k in keys)
        temps = read_calibration(path)
        assert temps and all(t > 0 for t in temps)
    total = sum(os.path.getsize(os.path.join(p, f)) for m in METHODS if (p := demo_drafter_path(m))
                for f in os.listdir(p))
    assert total < 24 << 20


@pytest.fixture(scope="module")
def spec_outputs(greedy_reference):
    """method -> the drafter's greedy outputs on the reference prompts (each method run once)."""
    texts, _ = greedy_reference
    cache = {}

    def run(method):
        if method not in cache:
            llm = LLM(max_model_len=1024, num_threads=1,
                      speculative_config={"method": method, "model": demo_drafter_path(method)})
            cache[method] = llm.generate(texts, SamplingParams(temperature=0, max_tokens=48))
        return cache[method]
    return run


def mean_acceptance_length(outs) -> float:
    return sum(o.spec_decode.num_emitted_tokens for o in outs) / sum(o.spec_decode.num_rounds for o in outs)


@pytest.mark.parametrize("method", METHODS)
def test_shipped_drafter_is_lossless_and_accepts(method, greedy_reference, spec_outputs):
    _, ref = greedy_reference
    outs = spec_outputs(method)
    assert [o.outputs[0].token_ids for o in outs] == ref
    tau = mean_acceptance_length(outs)
    assert tau > MIN_TAU[method], f"{method}: mean acceptance length {tau:.3f} (threshold {MIN_TAU[method]})"


def test_dspark_accepts_more_than_dflash(spec_outputs):
    """Same backbone recipe; DSpark adds the Markov head, which must pay off."""
    assert mean_acceptance_length(spec_outputs("dspark")) > mean_acceptance_length(spec_outputs("dflash"))


def test_launch_defaults_to_the_dspark_drafter():
    from sparkserve import cli
    from sparkserve.server.launch import settings_from_args

    spec = demo_speculative_config()
    assert spec["method"] == "dspark" and spec["model"] == demo_drafter_path("dspark")
    s = settings_from_args(cli.build_parser("launch").parse_args(["launch"]))
    assert s.engine_kwargs["speculative_config"] == spec
    off = settings_from_args(cli.build_parser("launch").parse_args(
        ["launch", "--speculative-config", '{"method": "none"}']))
    assert off.engine_kwargs["speculative_config"] == {"method": "none"}
