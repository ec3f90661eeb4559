"""The wire format is typed end to end: request parameters, stats and error kinds survive a frame
round trip as the same typed values."""
import dataclasses

from sparkserve.engine import wire
from sparkserve.errors import ContextLengthError, EngineError, ErrorKind, QueueFullError, error_kind
from sparkserve.outputs import SpecDecodeStats
from sparkserve.sampling_params import SamplingParams, SpeculativeParams


def round_trip(msg, decoder):
    frame = wire.encode_frame(msg)
    assert wire.frame_length(frame[:wire.HEADER_BYTES]) == len(frame) - wire.HEADER_BYTES
    return decoder.decode(frame[wire.HEADER_BYTES:])


def test_request_params_carry_every_sampling_field():
    carried = {f.name for f in dataclasses.fields(SamplingParams)} - {"extra"}
    assert set(wire.RequestParams.__struct_fields__) == carried  # a new SamplingParams field must travel too
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, top_k=20, min_p=0.05, seed=(1 << 64) - 1, max_tokens=None,
                            min_tokens=3, stop=["x", "yz"], stop_token_ids=[7], ignore_eos=True, logprobs=4,
                            skip_special_tokens=False, include_stop_str_in_output=True,
                            speculative=SpeculativeParams(max_draft_tokens=2, disable=False))
    msg = round_trip(wire.Add("r", [1, 2], wire.RequestParams.from_sampling(params), "hi"), wire.to_core_decoder)
    assert isinstance(msg, wire.Add) and msg.params.to_sampling() == params
    greedy = SamplingParams(temperature=0, max_tokens=5)  # an int temperature arrives as a float, still greedy
    assert round_trip(wire.Add("g", [1], wire.RequestParams.from_sampling(greedy)),
                      wire.to_core_decoder).params.to_sampling() == greedy


def test_error_kinds_are_typed_on_the_wire():
    assert error_kind(ContextLengthError("too long")) is ErrorKind.CONTEXT_LENGTH
    assert error_kind(QueueFullError("full")) is ErrorKind.QUEUE_FULL
    assert error_kind(ValueError("bad")) is ErrorKind.INVALID_REQUEST and error_kind(TypeError()) is ErrorKind.INVALID_REQUEST
    assert error_kind(RuntimeError("bug")) is ErrorKind.INTERNAL
    assert isinstance(ContextLengthError("x"), ValueError) and not isinstance(QueueFullError("x"), ValueError)
    assert EngineError("gone", ErrorKind.ENGINE_DEAD).kind is ErrorKind.ENGINE_DEAD
    for kind in ErrorKind:
        ack = round_trip(wire.AddAck("r", "why", kind), wire.from_core_decoder)
        assert ack.kind is kind


def test_engine_stats_are_typed_structs():
    total = SpecDecodeStats(num_drafts=3, num_draft_tokens=9, num_verified_draft_tokens=7, num_accepted_tokens=5,
                            num_rounds=4, num_emitted_tokens=9, accepted_per_pos=[3, 2])
    control = {"planner": {"mode": "lagged", "num_calls": 2, "fallback_reason": {"lagged_warmup": 1},
                           "last_budget": None, "last_num_verify_tokens": 6},
               "cost_table": {"age_s": 1.5, "prediction_error": 0.1},
               "draft_gate": {"num_steps": 4, "num_plain_steps": 1, "buckets": {"1": {"spec": 2.0, "plain": 3.0}}}}
    spec = wire.SpecEngineStats.build(total, {2: 3, 0: 1}, control)
    total.accepted_per_pos[0] += 1  # the snapshot does not follow the live counters
    stats = wire.EngineStats(1, 2, 0.25, 0, 64, 10, spec)
    got = round_trip(wire.Heartbeat(stats), wire.from_core_decoder).stats
    assert got == stats and got.spec_decode.total.accepted_per_pos == [3, 2]
    assert got.spec_decode.planner.fallback_reason == {"lagged_warmup": 1} and got.spec_decode.calibration is None
    assert got.spec_decode.verify_length_counts == {2: 3, 0: 1}
    assert got.spec_decode.total.mean_acceptance_length == 9 / 4
