"""The embedded demo model: loads through LLM and transformers, greedy outputs agree, sampled
outputs vary and end at the end-of-turn token."""
import json
import os

import pytest
import torch

from sparkserve import LLM, SamplingParams
from sparkserve.assets import DEMO_MODEL_DIR

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(DEMO_MODEL_DIR, "config.json")),
                                reason="no embedded demo model in this checkout")


def prompts(domain: str, n: int) -> list[str]:
    with open(os.path.join(DEMO_MODEL_DIR, f"demo-{domain}.jsonl")) as f:
        return [json.loads(line)["turns"][0] for line in f][:n]


@pytest.fixture(scope="module")
def llm():
    return LLM(max_model_len=1024)


def test_greedy_matches_transformers(llm):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    hf = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32).eval()
    texts = [llm.tokenizer.apply_chat_template([{"role": "user", "content": p}])
             for d in ("math", "code", "chat") for p in prompts(d, 1)]
    ours = llm.generate(texts, SamplingParams(temperature=0, max_tokens=32))
    eos = set(llm.engine.eos_token_ids)
    for text, out in zip(texts, ours):
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        assert ids[0].tolist() == out.prompt_token_ids
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False,
                              pad_token_id=0)[0, ids.shape[1]:].tolist()
        end = next((i + 1 for i, t in enumerate(ref) if t in eos), len(ref))  # both stop at end of turn
        assert out.outputs[0].token_ids == ref[:end]


def test_sampling_varies_and_stops_at_end_of_turn(llm):
    msgs = [{"role": "user", "content": prompts("chat", 1)[0]}]  # open-ended: math answers are near-deterministic
    outs = llm.chat(msgs, SamplingParams(temperature=1.0, n=6, seed=0, max_tokens=400))[0].outputs
    assert len({o.text for o in outs}) >= 4
    stopped = [o for o in outs if o.finish_reason == "stop"]
    assert stopped and all(o.token_ids[-1] in llm.engine.eos_token_ids for o in stopped)
