"""The draft gate: drafting only where it pays (pure unit tests), and losslessness in the engine
while it switches drafting off and on."""
import pytest

from sparkserve.spec_decode.draft_gate import DraftGate, load_bucket


def run_steps(gate: DraftGate, n: int, spec_rate: float, plain_rate: float, num_decoding: int = 4) -> list[bool]:
    """Drive the gate as the engine does; a step's rate is its mode's (transitions get the mean)."""
    decisions = []
    for _ in range(n):
        prev = gate._draft
        draft = gate.decide(num_decoding)
        rate = spec_rate if (draft and prev) else plain_rate if not (draft or prev) else (spec_rate + plain_rate) / 2
        gate.observe(num_decoding, False, int(rate), 1.0)  # rate tokens in one second
        decisions.append(draft)
    return decisions


def test_load_bucket():
    assert [load_bucket(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 64)] == [1, 1, 2, 4, 4, 8, 8, 16, 64]


def test_turns_drafting_off_when_plain_is_faster_and_probes_back():
    gate = DraftGate(window=4, min_samples=2, probe_every=10, probe_steps=2)
    decisions = run_steps(gate, 60, spec_rate=50.0, plain_rate=100.0)
    assert decisions[:2] == [True, True]  # measures spec first
    tail = decisions[10:]
    assert tail.count(False) > 0.75 * len(tail)  # plain wins most steps
    assert any(tail)  # but spec is still probed
    assert gate.stats()["num_plain_steps"] == decisions.count(False)


def test_keeps_drafting_when_spec_is_faster():
    gate = DraftGate(window=4, min_samples=2, probe_every=10, probe_steps=2)
    decisions = run_steps(gate, 60, spec_rate=150.0, plain_rate=100.0)
    assert decisions[10:].count(True) > 0.75 * 50


def test_flips_back_when_speculation_starts_to_pay():
    gate = DraftGate(window=3, min_samples=2, probe_every=16, probe_steps=2)
    assert run_steps(gate, 60, spec_rate=50.0, plain_rate=100.0)[-40:].count(False) >= 32  # off
    decisions = run_steps(gate, 140, spec_rate=200.0, plain_rate=100.0)
    assert decisions[-40:].count(True) >= 32  # back on after the next probe


def test_buckets_are_independent_and_prefill_steps_do_not_count():
    gate = DraftGate(window=4, min_samples=2, probe_every=10, probe_steps=2)
    run_steps(gate, 40, spec_rate=50.0, plain_rate=100.0, num_decoding=1)
    run_steps(gate, 40, spec_rate=300.0, plain_rate=100.0, num_decoding=32)
    buckets = gate.stats()["buckets"]
    assert buckets["1"]["spec"] < buckets["1"]["plain"] and buckets["32"]["spec"] > buckets["32"]["plain"]
    before = dict(gate.buckets[1].rates)
    gate.decide(1)
    gate.observe(1, True, 1000, 0.001)  # a prefill step: ignored
    assert {k: list(v) for k, v in gate.buckets[1].rates.items()} == {k: list(v) for k, v in before.items()}


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        DraftGate(window=2, min_samples=3)


def test_confirming_probes_back_off_and_a_flip_resets_the_interval():
    gate = DraftGate(window=3, min_samples=2, probe_every=8, probe_steps=2, max_probe_every=64)
    decisions = run_steps(gate, 400, spec_rate=50.0, plain_rate=100.0)
    spec_runs = [i for i in range(1, len(decisions)) if decisions[i] and not decisions[i - 1]]  # probe starts
    gaps = [b - a for a, b in zip(spec_runs, spec_runs[1:])]
    assert gaps == sorted(gaps) and gaps[-1] > 3 * gaps[0]  # the interval grows...
    assert gate.buckets[4].interval == 64  # ...up to its cap
    after = run_steps(gate, 200, spec_rate=200.0, plain_rate=100.0)  # the next probe flips it...
    plain_probes = [i for i in range(1, len(after)) if not after[i] and after[i - 1]]
    assert after[-1] and 1 <= plain_probes[1] - plain_probes[0] <= 8 + 4  # ...and the interval restarts at 8
