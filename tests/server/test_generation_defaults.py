"""Requests that omit sampling fields get the model's generation_config.json values (vLLM's
``--generation-config auto``); ``--generation-config none`` keeps the OpenAI defaults."""
import json

from sparkserve import cli
from sparkserve.server.launch import settings_from_args
from sparkserve.server.params import decode_json, sampling_kwargs
from sparkserve.server.protocol import ChatCompletionRequest
from sparkserve.server.settings import ServerSettings, generation_defaults


def _kwargs(body: dict, settings: ServerSettings) -> dict:
    req = decode_json(json.dumps(body).encode(), ChatCompletionRequest)
    return sampling_kwargs(req, settings, None, None, "top_logprobs")


def test_generation_defaults_fill_only_omitted_fields(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": [2]}))
    defaults = generation_defaults(str(tmp_path))
    assert defaults == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    settings = ServerSettings(sampling_defaults=defaults)
    msgs = [{"role": "user", "content": "hi"}]
    kw = _kwargs({"messages": msgs}, settings)
    assert (kw["temperature"], kw["top_p"], kw["top_k"]) == (0.6, 0.95, 20)
    kw = _kwargs({"messages": msgs, "temperature": 0, "top_k": -1}, settings)
    assert (kw["temperature"], kw["top_p"], kw["top_k"]) == (0, 0.95, -1)
    assert "temperature" not in _kwargs({"messages": msgs}, ServerSettings())


def test_greedy_or_missing_generation_config_gives_no_defaults(tmp_path):
    assert generation_defaults(str(tmp_path)) == {}
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6}))
    assert generation_defaults(str(tmp_path)) == {}


def test_launch_reads_the_demo_generation_config_unless_none():
    auto = settings_from_args(cli.build_parser("launch").parse_args(["launch"]))
    assert auto.sampling_defaults == {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    off = settings_from_args(cli.build_parser("launch").parse_args(["launch", "--generation-config", "none"]))
    assert off.sampling_defaults == {}
