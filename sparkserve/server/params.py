"""OpenAI request -> (prompt token ids, ``SamplingParams`` keyword arguments), with 400s that name
the offending field. Runs in the API process: ``SamplingParams`` and ``Tokenizer`` are torch-free.
"""
from __future__ import annotations

import re

import msgspec

from sparkserve.engine.wire import RequestParams
from sparkserve.sampling_params import SamplingParams
from sparkserve.server.errors import invalid_request
from sparkserve.server.protocol import ChatCompletionRequest, CompletionRequest, _GenerationRequest
from sparkserve.server.settings import ServerSettings

CHAT_ROLES = ("system", "developer", "user", "assistant")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the context end
MAX_STOP_STRINGS = 16
_PATH = re.compile(r"at `\$\.?(.*)`$")


_decoders: dict[type, msgspec.json.Decoder] = {}


def decode_json(body: bytes, type_):
    """Strict decode of a request body; unknown fields are ignored (see ``protocol``)."""
    decoder = _decoders.get(type_) or _decoders.setdefault(type_, msgspec.json.Decoder(type_))
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        m = _PATH.search(str(e))
        raise invalid_request(f"invalid request: {e}", param=m.group(1) if m and m.group(1) else None) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise invalid_request(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise invalid_request("the request body is nested too deeply") from None


def longest_token_bytes(tokenizer) -> int:
    """An upper bound on the UTF-8 bytes one token covers (its vocabulary string's length; byte-level
    and sentencepiece pieces spell a byte or a space with one or more characters, never fewer)."""
    hf, sp = getattr(tokenizer, "_hf", None), getattr(tokenizer, "_sp", None)
    if hf is not None:
        pieces = hf.get_vocab(with_added_tokens=True)
    elif sp is not None:
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    else:
        return 64
    return max((len(p.encode("utf-8")) for p in pieces), default=1)


def check_prompt_size(text: str, max_prompt_bytes: int | None, param: str) -> None:
    """400 (context_length_exceeded) without tokenizing when ``text`` cannot fit the context:
    more UTF-8 bytes than ``max_prompt_bytes`` (context tokens x the longest token's bytes)."""
    if max_prompt_bytes is None or len(text) <= max_prompt_bytes // 4:  # 4 bytes per char at most
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_prompt_bytes:
        raise invalid_request(f"the prompt is {size} bytes, more than this model's context can hold in tokens "
                              f"(at most {max_prompt_bytes} bytes)", param, "context_length_exceeded")


def chat_prompt(req: ChatCompletionRequest, tokenizer, max_prompt_bytes: int | None = None) -> tuple[str, list[int]]:
    """Render the chat template and tokenize (the engine's rule: special tokens added); a text that
    cannot fit the context is refused before tokenizing (``check_prompt_size``)."""
    if tokenizer is None:
        raise invalid_request("this model has no tokenizer; use /v1/completions with prompt token ids")
    if not req.messages:
        raise invalid_request("messages must contain at least one message", "messages")
    conversation = []
    for i, m in enumerate(req.messages):
        if m.role not in CHAT_ROLES:
            raise invalid_request(f"unsupported role {m.role!r}; expected one of {', '.join(CHAT_ROLES)}",
                                  f"messages[{i}].role")
        content = m.content
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise invalid_request(f"content part type {part.type!r} is not supported (text only)",
                                          f"messages[{i}].content[{j}]")
                if part.text is None:
                    raise invalid_request("a content part of type 'text' needs a 'text' string",
                                          f"messages[{i}].content[{j}].text")
                parts.append(part.text)
            content = "".join(parts)
        if content is None:
            if m.role != "assistant":
                raise invalid_request(f"a {m.role} message needs content", f"messages[{i}].content")
            content = ""
        msg = {"role": "system" if m.role == "developer" else m.role, "content": content}
        if m.name is not None:
            msg["name"] = m.name
        conversation.append(msg)
    try:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    except ValueError as e:
        raise invalid_request(str(e), "messages") from None
    check_prompt_size(text, max_prompt_bytes, "messages")
    return text, tokenizer.encode(text, add_special_tokens=True)


def completion_prompt(req: CompletionRequest, tokenizer,
                      max_prompt_bytes: int | None = None) -> tuple[str | None, list[int]]:
    prompt = req.prompt
    if prompt is None:
        raise invalid_request("prompt is required", "prompt")
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return None, list(prompt)
        if len(prompt) == 1 and isinstance(prompt[0], list):
            return None, list(prompt[0])
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        else:
            raise invalid_request("prompt must be a string or a list of token ids (one prompt per request)",
                                  "prompt")
    if tokenizer is None:
        raise invalid_request("this model has no tokenizer; send prompt token ids", "prompt")
    if not prompt:
        raise invalid_request("prompt is empty", "prompt")
    check_prompt_size(prompt, max_prompt_bytes, "prompt")
    return prompt, tokenizer.encode(prompt, add_special_tokens=True)


def sampling_kwargs(req: _GenerationRequest, settings: ServerSettings, max_tokens: int | None,
                    logprobs: int | None, logprobs_param: str) -> dict:
    """``SamplingParams`` keyword arguments, validated here (``request_params`` puts them on the wire)."""
    _reject_unsupported(req)
    n = 1 if req.n is None else req.n
    if n > settings.max_n:
        raise invalid_request(f"n must be at most {settings.max_n}, got {n}", "n")
    if logprobs is not None and logprobs > settings.max_logprobs:
        raise invalid_request(f"{logprobs_param} must be at most {settings.max_logprobs}, got {logprobs}",
                              logprobs_param)
    stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stop) > MAX_STOP_STRINGS:
        raise invalid_request(f"at most {MAX_STOP_STRINGS} stop strings are allowed", "stop")
    kw = {"n": n, "max_tokens": max_tokens, "logprobs": logprobs, "stop": stop, "seed": req.seed,
          "ignore_eos": req.ignore_eos, "min_tokens": req.min_tokens, "stop_token_ids": req.stop_token_ids or [],
          "skip_special_tokens": req.skip_special_tokens,
          "include_stop_str_in_output": req.include_stop_str_in_output}
    for name in ("temperature", "top_p", "top_k", "min_p"):
        if getattr(req, name) is not None:
            kw[name] = getattr(req, name)
        elif name in settings.sampling_defaults:
            kw[name] = settings.sampling_defaults[name]
    if req.speculative is not None:
        kw["speculative"] = {"max_draft_tokens": req.speculative.max_draft_tokens,
                             "disable": req.speculative.disable}
    try:
        SamplingParams(**kw)
    except (ValueError, TypeError) as e:
        field = str(e).split(" ", 1)[0]
        param = {"logprobs": logprobs_param}.get(field, field if field in _FIELDS else None)
        raise invalid_request(str(e), param) from None
    return kw


def request_params(kwargs: dict) -> RequestParams:
    """The wire form of ``sampling_kwargs``' result (typed, what the engine core receives)."""
    return RequestParams.from_sampling(SamplingParams(**kwargs))


_FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "seed", "max_tokens", "min_tokens", "stop",
           "stop_token_ids", "speculative.max_draft_tokens")


def _reject_unsupported(req: _GenerationRequest) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise invalid_request(f"{name} is not supported by this server (use 0 or omit it)", name)
    if req.logit_bias:
        raise invalid_request("logit_bias is not supported by this server", "logit_bias")
    if isinstance(req, ChatCompletionRequest):
        if req.tools:
            raise invalid_request("tool calling is not supported by this server", "tools")
        if req.tool_choice not in (None, "none", "auto"):
            raise invalid_request("tool_choice is not supported by this server", "tool_choice")
        if req.response_format is not None and req.response_format.type != "text":
            raise invalid_request("only response_format type 'text' is supported", "response_format")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise invalid_request("echo is not supported by this server", "echo")
        if req.suffix:
            raise invalid_request("suffix is not supported by this server", "suffix")
        if req.best_of is not None and req.best_of != (req.n or 1):
            raise invalid_request("best_of must equal n (best-of sampling is not supported)", "best_of")
