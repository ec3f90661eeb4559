"""The drafters shipped with the demo model: DeepSpec key names, load through --speculative-config,
greedy output with each equals plain greedy output token for token, and they actually accept drafts.
`sparkserve launch` without --model serves the demo model with the DSpark drafter on."""
import json
import os

import pytest
from safetensors import safe_open

from sparkserve import LLM, SamplingParams
from sparkserve.assets import DEMO_MODEL_DIR, demo_drafter_path, demo_speculative_config
from sparkserve.spec_decode.checkpoint import read_calibration

METHODS = ("dspark", "dflash", "eagle3")


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


@pytest.mark.parametrize("method", METHODS)
def test_shipped_drafter_is_lossless_and_accepts(method, greedy_reference):
    texts, ref = greedy_reference
    llm = LLM(max_model_len=1024, num_threads=1,
              speculative_config={"method": method, "model": demo_drafter_path(method)})
    outs = llm.generate(texts, SamplingParams(temperature=0, max_tokens=48))
    assert [o.outputs[0].token_ids for o in outs] == ref
    rounds = sum(o.spec_decode.num_rounds for o in outs)
    emitted = sum(o.spec_decode.num_emitted_tokens for o in outs)
    assert emitted / rounds > 1.5, f"{method}: mean acceptance length {emitted / rounds:.2f}"


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
