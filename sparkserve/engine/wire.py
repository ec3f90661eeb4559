"""The wire format between the API process and the engine core process: msgspec structs end to end.

A frame is a 4-byte big-endian payload length followed by one msgpack-encoded struct (a tagged
union, so the receiver knows the type). No pickle, no ``dict[str, Any]`` payloads: request
parameters, per-step deltas, stats and error kinds are all typed here. The socket is one end of a
``socketpair`` (AF_UNIX) the API process creates and hands to the core; either side reading EOF
means the other one is gone. Torch-free: the API process imports this module.

API -> core:  ``Start`` (once, first), ``Add``, ``Abort``.
core -> API:  ``Ready`` (engine built) or ``Fatal`` (cannot continue), ``AddAck`` (one per
``Add``, sent before the request's first output), ``StepOutputs`` (the deltas of the requests that
changed in one step, plus engine stats), ``Heartbeat`` (stats, about twice a second).
"""
from __future__ import annotations

import struct
from typing import Any, Union

import msgspec

from sparkserve.errors import ErrorKind
from sparkserve.outputs import SpecDecodeStats
from sparkserve.sampling_params import SamplingParams, SpeculativeParams

MAX_FRAME_BYTES = 256 << 20  # a frame larger than this means a corrupt stream
_HEADER = struct.Struct(">I")


# -- request parameters -------------------------------------------------------------------------------
class SpeculativeRequest(msgspec.Struct, array_like=True):
    max_draft_tokens: Union[int, None]
    disable: bool


class RequestParams(msgspec.Struct, array_like=True):
    """A validated ``SamplingParams``, field for field (``SamplingParams.extra`` does not travel)."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: Union[int, None]
    max_tokens: Union[int, None]
    min_tokens: int
    stop: list[str]
    stop_token_ids: list[int]
    ignore_eos: bool
    logprobs: Union[int, None]
    skip_special_tokens: bool
    include_stop_str_in_output: bool
    speculative: Union[SpeculativeRequest, None]

    @classmethod
    def from_sampling(cls, p: SamplingParams) -> RequestParams:
        spec = None if p.speculative is None else SpeculativeRequest(p.speculative.max_draft_tokens,
                                                                     p.speculative.disable)
        return cls(p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.seed, p.max_tokens, p.min_tokens, list(p.stop),
                   list(p.stop_token_ids), p.ignore_eos, p.logprobs, p.skip_special_tokens,
                   p.include_stop_str_in_output, spec)

    def to_sampling(self) -> SamplingParams:
        """Rebuilt (and so re-validated) on the engine side."""
        kwargs = msgspec.structs.asdict(self)
        spec = self.speculative
        kwargs["speculative"] = None if spec is None else SpeculativeParams(spec.max_draft_tokens, spec.disable)
        return SamplingParams(**kwargs)


# -- API -> core --------------------------------------------------------------------------------------
class Start(msgspec.Struct, tag="start"):
    """Build the engine: ``engine_kwargs`` are ``engine.args.build_engine_config`` keyword arguments."""

    engine_kwargs: dict[str, Any]
    log_level: str = "info"


class Add(msgspec.Struct, tag="add"):
    request_id: str
    prompt_token_ids: list[int]
    params: RequestParams
    prompt: Union[str, None] = None


class Abort(msgspec.Struct, tag="abort"):
    request_ids: list[str]


ToCore = Union[Start, Add, Abort]


# -- per-step outputs ---------------------------------------------------------------------------------
Logprobs = list[tuple[int, float, list[tuple[int, float]]]]  # per token: (id, logprob, [(top id, logprob)])


class SeqDelta(msgspec.Struct, array_like=True):
    """What one sequence (choice ``index``) of a request gained in one step. Everything is new since
    the previous delta except ``num_output_tokens`` (cumulative). ``new_logprobs`` has one entry per
    new token, or is None when the request did not ask for logprobs. A finished sequence sends its
    ``finish_reason`` once, in its last delta."""

    index: int
    new_text: str
    new_token_ids: list[int]
    num_output_tokens: int
    finish_reason: Union[str, None] = None
    stop_reason: Union[int, str, None] = None
    new_logprobs: Union[Logprobs, None] = None


class RequestDelta(msgspec.Struct, array_like=True):
    """A request's changed sequences in one step (the engine's per-step output, sent as it is);
    ``finished`` once every sequence is finished. ``spec_decode``: on the finishing delta, the
    request's speculative-decoding counters when the engine speculated for it, else None."""

    request_id: str
    finished: bool
    num_prompt_tokens: int
    num_cached_tokens: int
    seqs: list[SeqDelta]
    spec_decode: Union[SpecDecodeStats, None] = None


# -- stats --------------------------------------------------------------------------------------------
class PlannerStats(msgspec.Struct):
    """The verify planner: calls, fallbacks by reason, last K (lagged) and last verified draft count."""

    mode: str = ""
    num_calls: int = 0
    fallback_reason: dict[str, int] = {}
    last_budget: Union[int, None] = None
    last_num_verify_tokens: int = 0


class CostTableStats(msgspec.Struct):
    age_s: float = 0.0
    prediction_error: float = 0.0


class CalibrationStats(msgspec.Struct):
    """Online calibration drift of the drafter's confidences (``spec_decode/drift.py``)."""

    ece: float = 0.0
    ece_floor: float = 0.0
    ece_per_position: list[float] = []
    num_refits: int = 0
    num_rejected_refits: int = 0
    num_rounds: int = 0
    temperatures: list[float] = []


class DraftGateStats(msgspec.Struct):
    """Steps the gate decided, steps without drafting, each load bucket's mean rates by mode."""

    num_steps: int = 0
    num_plain_steps: int = 0
    buckets: dict[str, dict[str, float]] = {}


class SpecEngineStats(msgspec.Struct):
    """Cumulative engine-wide speculative-decoding counters and the control loop's state."""

    total: SpecDecodeStats = msgspec.field(default_factory=SpecDecodeStats)
    verify_length_counts: dict[int, int] = {}  # verify length l -> decode rounds
    planner: Union[PlannerStats, None] = None
    cost_table: Union[CostTableStats, None] = None
    calibration: Union[CalibrationStats, None] = None
    draft_gate: Union[DraftGateStats, None] = None

    @classmethod
    def build(cls, total: SpecDecodeStats, verify_length_counts: dict[int, int], control) -> SpecEngineStats:
        """A snapshot from the tracker's counters and ``SpecControl.stats()`` (a dict of the parts
        above, or an object with those attributes), converted and type-checked here, at the edge."""
        out = msgspec.convert(control or {}, cls, from_attributes=True)
        out.total = msgspec.structs.replace(total, accepted_per_pos=list(total.accepted_per_pos))
        out.verify_length_counts = dict(verify_length_counts)
        return out


class EngineStats(msgspec.Struct):
    """A snapshot of ``Engine.stats()``; ``num_preemptions`` and ``spec_decode`` are cumulative
    (``server/metrics.py`` turns them into Prometheus series)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0
    num_preemptions: int = 0
    num_blocks: int = 0
    num_steps: int = 0
    spec_decode: Union[SpecEngineStats, None] = None


# -- core -> API --------------------------------------------------------------------------------------
class Ready(msgspec.Struct, tag="ready"):
    max_model_len: int
    vocab_size: int
    num_blocks: int
    spec_method: str = "none"


class Fatal(msgspec.Struct, tag="fatal"):
    """The core cannot continue (engine failed to build, or a step raised); it exits after this."""

    message: str


class AddAck(msgspec.Struct, tag="ack"):
    """``error`` None: queued. Otherwise why not, and its ``kind``."""

    request_id: str
    error: Union[str, None] = None
    kind: Union[ErrorKind, None] = None


class StepOutputs(msgspec.Struct, tag="out"):
    outputs: list[RequestDelta]
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
