"""What a new user and an operator meet first (issue 18): configuration errors said once before the port
is bound, vLLM's positional model, the 404 that lists the served names, the ready line, one log line
per request, and the input bugs of the probe (deep JSON, empty API key, huge prompts, half-sent
requests, odd messages, an invalid Content-Length)."""
import json
import logging
import socket
import subprocess
import sys

import httpx
import pytest

from sparkserve import cli
from sparkserve.cli_args import with_default_planner
from sparkserve.server.console import ProbeFilter
from sparkserve.server.params import check_prompt_size
from sparkserve.server.errors import APIError
from tests.server.conftest import MODEL_NAME
from tests.server.server_proc import ROOT, ServerProcess

CHAT = "/v1/chat/completions"


def launch_error(capsys, *argv: str) -> str:
    """Run ``sparkserve launch ARGV`` in-process; it must fail before binding, with one line on stderr."""
    assert cli.main(["launch", *argv, "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_empty_api_key_is_refused(capsys, server_model_dir):
    assert "--api-key is empty" in launch_error(capsys, server_model_dir, "--api-key", "")


def test_model_errors_are_one_line_before_the_port(capsys, server_model_dir, tmp_path):
    assert "is not a directory" in launch_error(capsys, str(tmp_path / "missing"))
    hub = launch_error(capsys, "--model", "Qwen/Qwen3-0.6B")
    assert "does not download weights" in hub and "--local-dir" in hub
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert f"{broken / 'config.json'} is not valid JSON" in launch_error(capsys, str(broken))
    assert "two models given" in launch_error(capsys, server_model_dir, "--model", str(tmp_path))
    assert "exceeds the model's max_position_embeddings" in launch_error(capsys, server_model_dir,
                                                                          "--max-model-len", str(1 << 20))


def test_drafter_path_errors_say_drafter(capsys, server_model_dir, tmp_path):
    spec = json.dumps({"method": "dspark", "model": str(tmp_path / "nope")})
    err = launch_error(capsys, server_model_dir, "--speculative-config", spec)
    assert "drafter directory" in err and "model path" not in err


@pytest.mark.parametrize("value, message", [("{bad", "invalid JSON"),
                                            ('{"method": "dspark", "foo": 1}', "unknown speculative config key"),
                                            ('{"num_speculative_tokens": "x"}', "must be int")])
def test_bad_speculative_config_is_one_line(capsys, value, message):
    with pytest.raises(SystemExit) as e:
        cli.main(["launch", "--speculative-config", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "TypeError" not in err and "usage:" not in err


def test_a_drafter_model_gets_the_default_planner():
    spec = {"method": "eagle3", "model": "D"}
    assert with_default_planner(spec)["verify"] == "lagged"
    assert with_default_planner({**spec, "verify": "fixed"})["verify"] == "fixed"
    assert with_default_planner({**spec, "extra": {"verify": "causal"}}) == {**spec, "extra": {"verify": "causal"}}
    assert with_default_planner({"method": "ngram"}) == {"method": "ngram"}
    assert with_default_planner(None) is None


def test_probe_routes_stay_out_of_the_access_log():
    def record(path):
        return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                                 ("1.2.3.4:5", "GET", path, "1.1", 200), None)
    f = ProbeFilter()
    assert not f.filter(record("/health")) and not f.filter(record("/ready?x=1"))
    assert f.filter(record("/v1/models"))


def test_prompt_size_bound_refuses_without_tokenizing():
    check_prompt_size("x" * 1000, 1000, "prompt")
    check_prompt_size("x" * 10, None, "prompt")
    with pytest.raises(APIError) as e:
        check_prompt_size("é" * 600, 1000, "prompt")  # 1200 UTF-8 bytes
    assert e.value.code == "context_length_exceeded" and e.value.param == "prompt"


# -- the shared server (tiny model, API key) -----------------------------------------------------------------
def post(server, body: bytes | dict, path: str = CHAT, client: httpx.Client | None = None) -> httpx.Response:
    send = client or httpx
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    return send.post(server.url + path, headers={**server.headers, "Content-Type": "application/json"},
                     timeout=60, **kw)


def test_deeply_nested_json_is_a_400_and_keeps_the_connection(server):
    messages = [{"role": "user", "content": "hi"}]
    with httpx.Client() as c:
        for field, nested in (("tools", "[" * 3000 + "]" * 3000), ("tool_choice", '{"a":' * 3000 + "1" + "}" * 3000),
                              ("unknown_field", "[" * 3000 + "]" * 3000)):
            body = ('{"model": "%s", "messages": %s, "%s": %s}' % (MODEL_NAME, json.dumps(messages), field,
                                                                   nested)).encode()
            r = post(server, body, client=c)
            assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
            assert r.headers.get("connection") != "close"
        r = post(server, {"model": MODEL_NAME, "messages": messages, "max_tokens": 2}, client=c)
        assert r.status_code == 200


def test_unknown_model_404_lists_the_served_names(server):
    r = post(server, {"model": "sparkserve-demo", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and repr(MODEL_NAME) in r.json()["error"]["message"]


@pytest.mark.parametrize("extra, param, text", [
    ({"max_tokens": 2**63 - 1}, "max_tokens", "[1, 2147483647]"),
    ({"max_tokens": 4, "min_tokens": 8}, "min_tokens", "at most max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text",
     "needs a 'text'"),
])
def test_odd_messages_say_what_is_wrong(server, extra, param, text):
    r = post(server, {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], **extra})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == param and text in err["message"], err


def raw_http(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_invalid_content_length_gets_the_envelope(server):
    out = raw_http(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["error"]["code"] == "invalid_http_request"


# -- a server of its own: positional model, short body deadline, short context -------------------------------
@pytest.fixture(scope="module")
def small_server(server_model_dir, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "first-hour.log")
    proc = ServerProcess(server_model_dir, log, "--max-model-len", "128", "--num-kv-blocks", "64",
                         "--body-read-timeout", "1", "--served-model-name", MODEL_NAME, "--log-level", "debug",
                         api_key=None)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def test_ready_line_and_one_log_line_per_request(small_server):
    r = post(small_server, {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert r.status_code == 200
    rid = r.json()["id"]
    log = small_server.log()
    assert "ready at http://127.0.0.1:" in log and f"model names: {MODEL_NAME}" in log
    line = next(ln for ln in log.splitlines() if rid in ln and " INFO " in ln)
    assert "sparkserve.request" in line and "prompt_tokens=" in line and "output_tokens=3" in line
    assert "finish=length" in line and "latency=" in line
    # --log-level debug adds the admitted request's effective settings and its time to first token
    assert f"{rid} chat admitted: prompt_tokens=" in log and f"{rid} time to first token" in log


def test_huge_prompt_is_refused_before_tokenizing(small_server):
    r = post(small_server, {"model": MODEL_NAME, "prompt": "word " * 100_000}, "/v1/completions")
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded" and "bytes" in err["message"], err
    assert httpx.get(small_server.url + "/health", timeout=60).status_code == 200


def test_half_sent_body_gets_408(small_server):
    out = raw_http(small_server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 100\r\n\r\n{\"pro")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"]["code"] == "request_timeout"


def test_positional_model_is_vllms_form(server_model_dir):
    """``sparkserve launch DIR`` parses as ``--model DIR`` (checked without starting a server)."""
    from sparkserve.server.launch import settings_from_args

    args = cli.build_parser("launch").parse_args(["launch", server_model_dir, "--port", "9"])
    s = settings_from_args(args)
    assert s.model == server_model_dir and s.model_names == (server_model_dir,)


def test_bad_json_prints_no_usage_block():
    """The whole stderr of a real process, as a user sees it."""
    out = subprocess.run([sys.executable, "-m", "sparkserve.cli", "launch", "--speculative-config", "{bad"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "invalid JSON" in out.stderr


# -- vLLM's extra routes and the OpenAPI schema ---------------------------------------------------------------
def test_tokenize_and_detokenize_round_trip(server):
    r = post(server, {"model": MODEL_NAME, "prompt": "hello world"}, "/tokenize")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] > 0
    d = post(server, {"model": MODEL_NAME, "tokens": body["tokens"]}, "/detokenize")
    assert d.status_code == 200 and "hello world" in d.json()["prompt"]
    chat = post(server, {"messages": [{"role": "user", "content": "hi"}]}, "/tokenize").json()
    assert chat["count"] > body["count"] // 2  # the template's tokens around "hi"
    assert post(server, {"tokens": [10**9]}, "/detokenize").json()["error"]["param"] == "tokens"
    assert httpx.post(server.url + "/tokenize", json={"prompt": "x"}, timeout=60).status_code == 401  # keyed


def test_openapi_schema_matches_the_routes(server):
    schema = httpx.get(server.url + "/openapi.json", timeout=60).json()
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "top_k", "min_tokens", "speculative"} <= set(chat)
    for path, ops in schema["paths"].items():
        method = next(iter(ops))
        r = httpx.request(method.upper(), server.url + path, headers=server.headers, timeout=60,
                          **({"json": {}} if method == "post" else {}))
        assert r.status_code not in (404, 405), (path, r.status_code)
    docs = httpx.get(server.url + "/docs", timeout=60)
    assert docs.status_code == 200 and "/openapi.json" in docs.text
