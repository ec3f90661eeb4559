"""The OpenAI-compatible API through the official ``openai`` client, against a real server process."""
import subprocess
import sys

import httpx
import openai
import pytest

from tests.server.conftest import CONTEXT_TOKENS, MODEL_NAME
from tests.server.server_proc import ROOT

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}]
NO_EOS = {"ignore_eos": True}  # the random fixture model may emit eos at any point


def test_models_and_public_routes(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_NAME]
    assert models[0].object == "model" and models[0].model_extra["max_model_len"] == CONTEXT_TOKENS
    for path in ("/health", "/ready", "/version", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200, path  # public: no API key
    assert httpx.get(server.url + "/version").json()["version"]


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=8, temperature=0.7, seed=1,
                                       extra_body=NO_EOS)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL_NAME
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason == "length"
    assert isinstance(choice.message.content, str) and choice.logprobs is None
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_chat_streaming_matches_non_streaming(client):
    kw = dict(model=MODEL_NAME, messages=CHAT, max_tokens=12, temperature=0.9, seed=11, extra_body=NO_EOS)
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_streaming_and_token_prompt(client):
    kw = dict(model=MODEL_NAME, prompt="def add(a, b):", max_tokens=10, temperature=0, extra_body=NO_EOS)
    full = client.completions.create(**kw)
    assert full.object == "text_completion" and full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 10
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    by_ids = client.completions.create(model=MODEL_NAME, prompt=[5, 6, 7, 8], max_tokens=3, extra_body=NO_EOS)
    assert by_ids.usage.prompt_tokens == 4 and by_ids.usage.completion_tokens == 3


def test_completions_default_max_tokens_is_16(client):
    r = client.completions.create(model=MODEL_NAME, prompt="hello", extra_body=NO_EOS)
    assert r.usage.completion_tokens == 16


def test_seeds_repeat(client):
    def run(seed):
        return client.completions.create(model=MODEL_NAME, prompt="the lazy dog", max_tokens=16, temperature=1.0,
                                         seed=seed, extra_body=NO_EOS).choices[0].text

    a, b, c = run(123), run(123), run(124)
    assert a == b
    assert a != c


def test_n_choices(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=6, n=3, seed=5,
                                       extra_body=NO_EOS)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 18
    assert len({c.message.content for c in r.choices}) > 1  # child seeds differ
    chunks = list(client.completions.create(model=MODEL_NAME, prompt="abc", max_tokens=5, n=2, stream=True,
                                            extra_body=NO_EOS))
    done = sorted(ch.choices[0].index for ch in chunks if ch.choices[0].finish_reason)
    assert done == [0, 1]


def test_stop_strings(client):
    """Text ends right before the stop string, streamed or not (the stop may span chunks)."""
    kw = dict(model=MODEL_NAME, prompt="the quick brown", temperature=0, extra_body=NO_EOS)
    base = client.completions.create(max_tokens=40, **kw).choices[0].text
    start = len(base) // 3
    k = next(i for i in range(start, len(base) - 1) if "\ufffd" not in base[i:i + 2])
    stop = base[k:k + 2]
    expected = base[:base.index(stop)]
    r = client.completions.create(max_tokens=40, stop=[stop], **kw)
    assert r.choices[0].text == expected and r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(max_tokens=40, stop=stop, stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=4, logprobs=True,
                                       top_logprobs=3, extra_body=NO_EOS)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert entry.logprob <= 0 and isinstance(entry.token, str) and isinstance(entry.bytes, list)
        assert len(entry.top_logprobs) == 3
        assert all(t.logprob <= 0 for t in entry.top_logprobs)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=4, logprobs=True,
                                                 stream=True, extra_body=NO_EOS))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert len(streamed) == 4 and all(e.top_logprobs == [] for e in streamed)
    comp = client.completions.create(model=MODEL_NAME, prompt="abc", max_tokens=3, logprobs=2, extra_body=NO_EOS)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_extension_fields_and_unknown_fields(server):
    """vLLM-style extras and ``speculative`` are accepted; unknown fields are ignored."""
    body = {"model": MODEL_NAME, "prompt": "abc", "max_tokens": 3, "top_k": 5, "min_p": 0.05, "min_tokens": 2,
            "speculative": {"max_draft_tokens": 2, "disable": False}, "user": "u1", "metadata": {"x": 1},
            "some_future_field": [1, 2], "presence_penalty": 0, "frequency_penalty": 0.0, "best_of": 1}
    r = httpx.post(server.url + "/v1/completions", json=body, headers=server.headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 2
    assert "spec_decode" not in r.json()["usage"]  # only when the engine speculated


def test_api_process_never_imports_torch(server):
    with open(f"/proc/{server.proc.pid}/maps") as f:
        assert "libtorch" not in f.read()
    with open(f"/proc/{server.core_pid()}/maps") as f:
        assert "libtorch" in f.read()  # the engine core does
    code = ("import sys; import sparkserve.cli, sparkserve.server.launch, sparkserve.server.app, "
            "sparkserve.server.serving, sparkserve.engine.client; "
            "from sparkserve.server.app import build_app; from sparkserve.server.settings import ServerSettings; "
            "build_app(ServerSettings(model='.')); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_openai_client_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=CONTEXT_TOKENS)
    assert e.value.code == "context_length_exceeded"
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_readme_quickstart_examples(server, capsys):
    """The README's curl body and openai snippet, pointed at the test server instead of :8000."""
    import json
    import os
    import re

    from tests.server.server_proc import API_KEY

    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split("## Quickstart (HTTP)")[1].split("\n## ")[0]
    blocks = dict(re.findall(r"```(\w+)\n(.*?)```", section, re.S)[1:])  # bash (curl) and python
    assert "sparkserve launch" in section and "http://127.0.0.1:8000" in blocks["bash"]
    body = json.loads(re.search(r"-d '(.*?)'", blocks["bash"], re.S).group(1))
    r = httpx.post(server.url + "/v1/chat/completions", headers=server.headers, timeout=60,
                   json={**body, "model": MODEL_NAME})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    code = (blocks["python"].replace("http://127.0.0.1:8000", server.url)
            .replace('"sparkserve-demo"', f'"{MODEL_NAME}"').replace('api_key="unused"', f'api_key="{API_KEY}"'))
    exec(compile(code, "README.md", "exec"), {})
    assert re.search(r"\[\d+ tokens\]", capsys.readouterr().out)
