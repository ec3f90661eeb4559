"""Messages between the API process and the engine core process, and their wire framing.

Wire format: a frame is a 4-byte big-endian payload length followed by one msgpack-encoded
msgspec struct (a tagged union, so the receiver knows the type). No pickle: every field is an
int, float, str, list or small struct. The socket is one end of a ``socketpair`` (AF_UNIX) the
API process creates and hands to the core; either side reading EOF means the other one is gone.

API -> core:  ``Start`` (once, first), ``Add``, ``Abort``.
core -> API:  ``Ready`` (engine built) or ``Fatal`` (cannot continue), ``AddAck`` (one per
``Add``, sent before the request's first output), ``StepOutputs`` (deltas of the requests that
changed in one step, plus engine stats), ``Heartbeat`` (stats, about twice a second).
"""
from __future__ import annotations

import struct
from typing import Any, Union

import msgspec

MAX_FRAME_BYTES = 256 << 20  # a frame larger than this means a corrupt stream
_HEADER = struct.Struct(">I")


# -- API -> core --------------------------------------------------------------------------------------
class Start(msgspec.Struct, tag="start"):
    """Build the engine: ``engine_kwargs`` are ``build_engine_config`` keyword arguments."""

    engine_kwargs: dict[str, Any]
    log_level: str = "info"


class Add(msgspec.Struct, tag="add"):
    """Queue a request; ``params`` are ``SamplingParams`` keyword arguments (already validated)."""

    request_id: str
    prompt_token_ids: list[int]
    params: dict[str, Any]
    prompt: Union[str, None] = None


class Abort(msgspec.Struct, tag="abort"):
    request_ids: list[str]


ToCore = Union[Start, Add, Abort]


# -- core -> API --------------------------------------------------------------------------------------
class EngineStats(msgspec.Struct):
    """A snapshot of ``Engine.stats()``; ``num_preemptions`` is cumulative.

    ``spec_decode``: cumulative speculative-decoding counters once the engine reports them
    (None until then); ``metrics.Metrics.record_spec_decode`` is where they become Prometheus
    series.
    """

    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0
    num_preemptions: int = 0
    num_blocks: int = 0
    num_steps: int = 0
    spec_decode: Union[dict[str, Any], None] = None


class Ready(msgspec.Struct, tag="ready"):
    max_model_len: int
    vocab_size: int
    num_blocks: int
    spec_method: str = "none"


class Fatal(msgspec.Struct, tag="fatal"):
    """The core cannot continue (engine failed to build, or a step raised); it exits after this."""

    message: str


class AddAck(msgspec.Struct, tag="ack"):
    """``error`` None: queued. Otherwise ``kind`` is "invalid" (400), "queue_full" (429) or "internal"."""

    request_id: str
    error: Union[str, None] = None
    kind: Union[str, None] = None


class SeqDelta(msgspec.Struct, array_like=True):
    """What is new for one sequence (choice ``index``) of a request since the last message.

    ``logprobs``: one ``(token_id, logprob, [(top_id, top_logprob), ...])`` per new token, or None
    when the request did not ask for logprobs. ``num_output_tokens`` is cumulative.
    """

    index: int
    delta_text: str
    delta_token_ids: list[int]
    num_output_tokens: int
    finish_reason: Union[str, None] = None
    stop_reason: Union[int, str, None] = None
    logprobs: Union[list[tuple[int, float, list[tuple[int, float]]]], None] = None


class ReqDelta(msgspec.Struct, array_like=True):
    """A request's changed sequences in one step; ``finished`` once every sequence is finished.

    ``spec_decode`` is ``SpecDecodeStats.as_dict()`` on the finishing message when the engine
    speculated for this request, else None.
    """

    request_id: str
    finished: bool
    num_prompt_tokens: int
    num_cached_tokens: int
    seqs: list[SeqDelta]
    spec_decode: Union[dict[str, Any], None] = None


class StepOutputs(msgspec.Struct, tag="out"):
    outputs: list[ReqDelta]
    stats: EngineStats


class Heartbeat(msgspec.Struct, tag="hb"):
    stats: EngineStats


FromCore = Union[Ready, Fatal, AddAck, StepOutputs, Heartbeat]


# -- framing ------------------------------------------------------------------------------------------
_encoder = msgspec.msgpack.Encoder()


def encode_frame(msg: msgspec.Struct) -> bytes:
    payload = _encoder.encode(msg)
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {n} bytes exceeds the {MAX_FRAME_BYTES}-byte limit (corrupt stream?)")
    return n


HEADER_BYTES = _HEADER.size
to_core_decoder = msgspec.msgpack.Decoder(ToCore)
from_core_decoder = msgspec.msgpack.Decoder(FromCore)
