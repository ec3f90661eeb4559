"""Every README example is one the demo model answers correctly (issue 18): the prompts are read from
README.md itself (the curl body, the openai client's messages, the offline block, which runs as
written), and each must end in the right ``\\boxed{}`` answer greedily and at the model's
generation_config sampling for several seeds (what an HTTP request without sampling fields gets)."""
import ast
import contextlib
import io
import json
import os
import re

import pytest

from sparkserve.sampling_params import SamplingParams

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
BOXED = re.compile(r"\\boxed\{([^}]*)\}")
SEEDS = (1, 2, 3, 4)


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", readme(), re.S)


def curl_question() -> str:
    block = next(b for b in code_blocks("bash") if "curl" in b and "/v1/chat/completions" in b)
    body = json.loads(re.search(r"-d '(.*)'", block, re.S).group(1))
    assert body["model"] == "sparkserve-demo"
    return body["messages"][0]["content"]


def openai_question() -> str:
    block = next(b for b in code_blocks("python") if "from openai import OpenAI" in b)
    messages = re.search(r"messages=(\[.*?\]),\n", block, re.S).group(1)
    return ast.literal_eval(messages)[0]["content"]


def answer(text: str) -> str | None:
    m = BOXED.search(text)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def llm():
    from sparkserve import LLM

    return LLM(speculative_config={"method": "none"}, num_threads=1)


@pytest.mark.parametrize("question, expected", [(curl_question, "28"), (openai_question, "15")])
def test_http_examples_are_answered(llm, question, expected):
    from sparkserve.assets import demo_model_path
    from sparkserve.server.settings import generation_defaults

    prompt = llm.tokenizer.apply_chat_template([{"role": "user", "content": question()}])
    params = [SamplingParams(temperature=0, max_tokens=96)]
    params += [SamplingParams(**generation_defaults(demo_model_path()), seed=s, max_tokens=96) for s in SEEDS]
    texts = [o.outputs[0].text for o in llm.generate([prompt] * len(params), params)]
    assert [answer(t) for t in texts] == [expected] * len(params), texts


def test_offline_example_runs_as_written_and_is_right():
    block = next(b for b in code_blocks("python") if "from sparkserve import LLM" in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    assert [answer(line) for line in out.getvalue().splitlines() if "boxed" in line] == ["15", "15"], out.getvalue()
