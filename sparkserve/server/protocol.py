"""OpenAI request and response schemas as msgspec structs.

Unknown-field policy (requests): unknown fields are ignored, because OpenAI clients and SDKs send
extras (``user``, ``metadata``, ``store``, ...). Known fields are strictly typed (``"0.5"`` is not a
number, ``true`` is not an int; a wrong type is a 400 naming the field). Known OpenAI features this
server does not implement are rejected with a 400 only when they would change the result
(``tools``, ``logit_bias``, non-zero penalties, ``echo``, ``suffix``, JSON ``response_format``,
``best_of`` > ``n``); their neutral values are accepted.

Responses follow OpenAI's shapes: fields that OpenAI sends as ``null`` are sent as ``null``.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

import msgspec
from msgspec import UNSET, Struct, UnsetType

# Every integer is bounded to int64: larger ones are a 400 here instead of an overflow in the engine.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# -- requests -----------------------------------------------------------------------------------------
class StreamOptions(Struct):
    include_usage: bool = False


class SpeculativeOptions(Struct):
    """Per-request speculation control (sparkserve extension) -> ``SamplingParams.speculative``."""

    max_draft_tokens: Union[Int64, None] = None
    disable: bool = False


class ContentPart(Struct):
    type: str
    text: Union[str, None] = None


class ChatMessage(Struct):
    role: str
    content: Union[str, list[ContentPart], None] = None
    name: Union[str, None] = None


class ResponseFormat(Struct):
    type: str = "text"


class _GenerationRequest(Struct):
    """Fields shared by chat and completions (OpenAI's, plus vLLM's sampling extensions)."""

    model: Union[str, None] = None
    max_tokens: Union[Int64, None] = None
    temperature: Union[float, None] = None
    top_p: Union[float, None] = None
    top_k: Union[Int64, None] = None
    min_p: Union[float, None] = None
    stop: Union[str, list[str], None] = None
    seed: Union[Int64, None] = None
    n: Union[Int64, None] = None
    user: Union[str, None] = None
    stream: Union[bool, None] = False
    stream_options: Union[StreamOptions, None] = None
    ignore_eos: bool = False
    min_tokens: Int64 = 0
    stop_token_ids: Union[list[Int64], None] = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    speculative: Union[SpeculativeOptions, None] = None
    # OpenAI features we do not implement: accepted at their neutral values only.
    presence_penalty: Union[float, None] = None
    frequency_penalty: Union[float, None] = None
    logit_bias: Union[dict[str, float], None] = None


class ChatCompletionRequest(_GenerationRequest):
    messages: Union[list[ChatMessage], None] = None
    max_completion_tokens: Union[Int64, None] = None
    logprobs: Union[bool, None] = False
    top_logprobs: Union[Int64, None] = None
    tools: Union[list[Any], None] = None
    tool_choice: Union[str, dict[str, Any], None] = None
    response_format: Union[ResponseFormat, None] = None


class CompletionRequest(_GenerationRequest):
    prompt: Union[str, list[Union[Int64, str, list[Int64]]], None] = None
    logprobs: Union[Int64, None] = None
    echo: Union[bool, None] = False
    suffix: Union[str, None] = None
    best_of: Union[Int64, None] = None


class TokenizeRequest(Struct):
    """``POST /tokenize`` (vLLM's): a ``prompt`` string, or chat ``messages`` rendered with the template."""

    model: Union[str, None] = None
    prompt: Union[str, None] = None
    messages: Union[list[ChatMessage], None] = None
    add_special_tokens: bool = True


class DetokenizeRequest(Struct):
    model: Union[str, None] = None
    tokens: list[Int64] = []


# -- responses ----------------------------------------------------------------------------------------
class Usage(Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    spec_decode: Union[dict[str, Any], None] = None  # only when the engine speculated for this request


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: Union[list[int], None]


class ChatTokenLogprob(Struct):
    token: str
    logprob: float
    bytes: Union[list[int], None]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Struct):
    content: Union[list[ChatTokenLogprob], None]


class ChatMessageOut(Struct):
    role: str
    content: Union[str, None]


class ChatChoice(Struct):
    index: int
    message: ChatMessageOut
    logprobs: Union[ChatLogprobs, None]
    finish_reason: Union[str, None]


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: str = "chat.completion"


class Delta(Struct, omit_defaults=True):
    role: Union[str, None] = None
    content: Union[str, None] = None


class ChatChunkChoice(Struct):
    index: int
    delta: Delta
    logprobs: Union[ChatLogprobs, None] = None
    finish_reason: Union[str, None] = None


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Union[Usage, None, UnsetType] = UNSET  # present (null) on every chunk when include_usage


class CompletionLogprobs(Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(Struct):
    index: int
    text: str
    logprobs: Union[CompletionLogprobs, None]
    finish_reason: Union[str, None]


class Completion(Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: str = "text_completion"
    usage: Union[Usage, None, UnsetType] = UNSET


class TokenizeResponse(Struct):
    count: int
    max_model_len: Union[int, None]
    tokens: list[int]


class DetokenizeResponse(Struct):
    prompt: str


class ModelCard(Struct):
    id: str
    created: int
    owned_by: str = "sparkserve"
    object: str = "model"
    root: Union[str, None] = None
    max_model_len: Union[int, None] = None


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


json_encoder = msgspec.json.Encoder()
