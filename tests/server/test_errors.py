"""Bad input never gets a 500: each case gets its status and OpenAI's error envelope, and the server
keeps serving afterwards."""
import json

import httpx
import pytest

from tests.server.conftest import CONTEXT_TOKENS, MAX_BODY_BYTES, MODEL_NAME
from tests.server.server_proc import API_KEY

CHAT_URL, COMP_URL = "/v1/chat/completions", "/v1/completions"
MSGS = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def chat(**kw):
    return {"model": MODEL_NAME, "messages": MSGS, "max_tokens": 4, **kw}


def comp(**kw):
    return {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 4, **kw}


# (id, method, path, body: dict | bytes | None, headers, status, code, param)
CASES = [
    ("bad-json", "POST", CHAT_URL, b"{bad json", AUTH, 400, None, None),
    ("json-array", "POST", CHAT_URL, b"[1, 2]", AUTH, 400, None, None),
    ("invalid-utf8", "POST", COMP_URL, b'{"prompt": "\xff\xfe"}', AUTH, 400, None, None),
    ("messages-not-list", "POST", CHAT_URL, chat(messages="hi"), AUTH, 400, None, "messages"),
    ("messages-empty", "POST", CHAT_URL, chat(messages=[]), AUTH, 400, None, "messages"),
    ("messages-missing", "POST", CHAT_URL, {"model": MODEL_NAME}, AUTH, 400, None, "messages"),
    ("bad-role", "POST", CHAT_URL, chat(messages=[{"role": "wizard", "content": "x"}]), AUTH, 400, None,
     "messages[0].role"),
    ("role-missing", "POST", CHAT_URL, chat(messages=[{"content": "x"}]), AUTH, 400, None, "messages[0]"),
    ("tool-role", "POST", CHAT_URL, chat(messages=[{"role": "tool", "content": "x"}]), AUTH, 400, None,
     "messages[0].role"),
    ("image-part", "POST", CHAT_URL,
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), AUTH, 400,
     None, "messages[0].content[0]"),
    ("content-wrong-type", "POST", CHAT_URL, chat(messages=[{"role": "user", "content": 5}]), AUTH, 400, None,
     "messages[0].content"),
    ("temperature-string", "POST", CHAT_URL, chat(temperature="0.5"), AUTH, 400, None, "temperature"),
    ("temperature-negative", "POST", CHAT_URL, chat(temperature=-1), AUTH, 400, None, "temperature"),
    ("top-p-zero", "POST", CHAT_URL, chat(top_p=0), AUTH, 400, None, "top_p"),
    ("top-k-negative", "POST", COMP_URL, comp(top_k=-2), AUTH, 400, None, "top_k"),
    ("top-k-beyond-int64", "POST", COMP_URL, comp(top_k=10**30), AUTH, 400, None, "top_k"),
    ("min-p-too-big", "POST", COMP_URL, comp(min_p=1.5), AUTH, 400, None, "min_p"),
    ("max-tokens-negative", "POST", CHAT_URL, chat(max_tokens=-1), AUTH, 400, None, "max_tokens"),
    ("max-tokens-zero", "POST", COMP_URL, comp(max_tokens=0), AUTH, 400, None, "max_tokens"),
    ("max-tokens-float", "POST", COMP_URL, comp(max_tokens=1.5), AUTH, 400, None, "max_tokens"),
    ("max-completion-tokens-bool", "POST", CHAT_URL, chat(max_completion_tokens=True), AUTH, 400, None,
     "max_completion_tokens"),
    ("n-zero", "POST", CHAT_URL, chat(n=0), AUTH, 400, None, "n"),
    ("n-over-cap", "POST", CHAT_URL, chat(n=9), AUTH, 400, None, "n"),
    ("top-logprobs-over-cap", "POST", CHAT_URL, chat(logprobs=True, top_logprobs=6), AUTH, 400, None,
     "top_logprobs"),
    ("top-logprobs-without-logprobs", "POST", CHAT_URL, chat(top_logprobs=2), AUTH, 400, None, "top_logprobs"),
    ("logprobs-over-cap", "POST", COMP_URL, comp(logprobs=6), AUTH, 400, None, "logprobs"),
    ("seed-string", "POST", COMP_URL, comp(seed="abc"), AUTH, 400, None, "seed"),
    ("seed-huge", "POST", COMP_URL, comp(seed=2**70), AUTH, 400, None, "seed"),
    ("stop-int", "POST", COMP_URL, comp(stop=123), AUTH, 400, None, "stop"),
    ("stop-empty-string", "POST", COMP_URL, comp(stop=[""]), AUTH, 400, None, "stop"),
    ("stream-string", "POST", CHAT_URL, chat(stream="yes"), AUTH, 400, None, "stream"),
    ("ignore-eos-string", "POST", COMP_URL, comp(ignore_eos="x"), AUTH, 400, None, "ignore_eos"),
    ("speculative-negative", "POST", COMP_URL, comp(speculative={"max_draft_tokens": -1}), AUTH, 400, None,
     "speculative.max_draft_tokens"),
    ("presence-penalty", "POST", CHAT_URL, chat(presence_penalty=0.5), AUTH, 400, None, "presence_penalty"),
    ("tools", "POST", CHAT_URL, chat(tools=[{"type": "function", "function": {"name": "f"}}]), AUTH, 400, None,
     "tools"),
    ("echo", "POST", COMP_URL, comp(echo=True), AUTH, 400, None, "echo"),
    ("best-of", "POST", COMP_URL, comp(best_of=3), AUTH, 400, None, "best_of"),
    ("prompt-missing", "POST", COMP_URL, {"model": MODEL_NAME}, AUTH, 400, None, "prompt"),
    ("prompt-empty", "POST", COMP_URL, comp(prompt=""), AUTH, 400, None, "prompt"),
    ("prompt-batch", "POST", COMP_URL, comp(prompt=["a", "b"]), AUTH, 400, None, "prompt"),
    ("token-id-beyond-int64", "POST", COMP_URL, comp(prompt=[1, 10**30]), AUTH, 400, None, "prompt[1]"),
    ("token-out-of-vocab", "POST", COMP_URL, comp(prompt=[1, 99999]), AUTH, 400, None, "prompt"),
    ("prompt-too-long", "POST", COMP_URL, comp(prompt=[5] * CONTEXT_TOKENS), AUTH, 400, "context_length_exceeded",
     "prompt"),
    ("prompt-plus-max-tokens-too-long", "POST", CHAT_URL, chat(max_tokens=CONTEXT_TOKENS), AUTH, 400,
     "context_length_exceeded", "messages"),
    ("too-long-streaming", "POST", COMP_URL, comp(prompt=[5] * CONTEXT_TOKENS, stream=True), AUTH, 400,
     "context_length_exceeded", "prompt"),
    ("unknown-model", "POST", CHAT_URL, chat(model="gpt-17"), AUTH, 404, "model_not_found", "model"),
    ("no-auth", "POST", CHAT_URL, chat(), {}, 401, "invalid_api_key", None),
    ("wrong-auth", "POST", CHAT_URL, chat(), {"Authorization": "Bearer sk-wrong"}, 401, "invalid_api_key", None),
    ("auth-not-bearer", "GET", "/v1/models", None, {"Authorization": f"Basic {API_KEY}"}, 401, "invalid_api_key",
     None),
    ("unknown-route", "GET", "/v1/nope", None, AUTH, 404, "not_found", None),
    ("unknown-route-public", "GET", "/nope", None, {}, 404, "not_found", None),
    ("wrong-method", "GET", CHAT_URL, None, AUTH, 405, "method_not_allowed", None),
    ("wrong-method-models", "POST", "/v1/models", None, AUTH, 405, "method_not_allowed", None),
    ("body-too-large", "POST", CHAT_URL, chat(messages=[{"role": "user", "content": "x" * MAX_BODY_BYTES}]), AUTH, 413,
     "request_too_large", None),
]


def _check_envelope(r: httpx.Response, status: int, code, param):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, case):
    _, method, path, body, headers, status, code, param = case
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = httpx.request(method, server.url + path, content=content, timeout=30,
                      headers={"Content-Type": "application/json", **headers})
    _check_envelope(r, status, code, param)


def test_body_too_large_without_content_length(server):
    """A chunked body has no Content-Length: the limit applies to the bytes actually received."""

    def chunks():
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(MAX_BODY_BYTES // 2000 + 1):
            yield b"x" * 2000
        yield b'"}'

    r = httpx.post(server.url + COMP_URL, content=chunks(), headers=AUTH, timeout=30)
    _check_envelope(r, 413, "request_too_large", None)


def test_still_serving_after_bad_input(server):
    assert len(CASES) >= 25
    r = httpx.post(server.url + CHAT_URL, json=chat(), headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert httpx.get(server.url + "/health").status_code == 200
