"""Drafting on or off, per load: speculation only where it pays on this machine.

The verify-length planners decide how many drafts the target checks, but the drafter's own cost is
paid on every step it runs, even when the planner then verifies nothing. Where a draft block costs
more than its accepted tokens buy (a small model on a CPU, where the vocabulary projection over a
block costs as much as a whole decode step; or large batches on any device), the best plan is not to
draft at all. The gate measures that instead of guessing.

- A step is **spec** when it drafted and the step before drafted too (it verifies a block and drafts
  the next one), **plain** when neither drafted (pure decoding). Steps that switch modes and steps
  that carry prefill work are not measured.
- Per load bucket (decoding requests rounded up to a power of two) the gate keeps the last
  ``window`` output rates of each mode: emitted tokens per second of step time.
- It drafts when the spec rate's mean is at least the plain rate's. Until a bucket has
  ``min_samples`` of both, it measures the one it lacks (spec first). After ``probe_every`` steps
  in one mode it runs ``probe_steps`` steps of the other (plus one to switch), so a change in
  acceptance or machine speed can flip the choice back. A probe that confirms the choice doubles the
  bucket's interval (up to ``max_probe_every``); one that flips it resets the interval. Probing a
  mode that costs 3x every 96 steps costs ~10% (without back-off the demo sweep's gated planners ran
  at 0.70-1.14x plain decoding; with it, lagged at 0.90-1.04x), under 1% once the interval has grown.

Lossless by construction: a step without drafts is plain decoding (verify length 0). Seeded sampled
outputs then depend on the gate's choices (the drafter draws from the request's generator), as they
already do on the load-aware planners' verify lengths; greedy outputs never do.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SPEC, PLAIN = "spec", "plain"


@dataclass
class _Bucket:
    """Recent output rates (tokens/s) of each mode and the probe bookkeeping of one load bucket."""

    rates: dict[str, deque] = field(default_factory=dict)
    steps_in_mode: int = 0  # steps since the last probe
    probe_left: int = 0  # steps of the other mode still to run
    interval: int = 0  # steps between probes (0: not set yet)
    probe_from: bool | None = None  # the choice (spec?) when the running probe started

    def mean(self, mode: str) -> float:
        r = self.rates.get(mode)
        return sum(r) / len(r) if r else 0.0

    def count(self, mode: str) -> int:
        return len(self.rates.get(mode, ()))


def load_bucket(num_decoding: int) -> int:
    """Smallest power of two >= num_decoding (1 for 0 or 1)."""
    return 1 << max(int(num_decoding) - 1, 0).bit_length()


class DraftGate:
    """``decide(num_decoding) -> bool`` before each step (draft after it?), then ``observe(...)``."""

    def __init__(self, *, window: int = 12, min_samples: int = 3, probe_every: int = 96, probe_steps: int = 4,
                 max_probe_every: int = 3072):
        if min(window, min_samples, probe_every, probe_steps) < 1 or min_samples > window \
                or max_probe_every < probe_every:
            raise ValueError("draft gate: window, probe_every, probe_steps >= 1, 1 <= min_samples <= window, "
                             "max_probe_every >= probe_every")
        self.window, self.min_samples = window, min_samples
        self.probe_every, self.probe_steps, self.max_probe_every = probe_every, probe_steps, max_probe_every
        self.buckets: dict[int, _Bucket] = {}
        self._prev_draft = True  # the decision of the previous step
        self._draft = True  # the decision of the current step
        self.num_steps = 0
        self.num_plain_steps = 0  # steps that did not draft

    def _bucket(self, num_decoding: int) -> _Bucket:
        return self.buckets.setdefault(load_bucket(num_decoding), _Bucket())

    def decide(self, num_decoding: int) -> bool:
        """Whether to draft at the end of this step (for the next one)."""
        b = self._bucket(num_decoding)
        self._prev_draft = self._draft
        if b.count(SPEC) < self.min_samples:
            draft = True
        elif b.count(PLAIN) < self.min_samples:
            draft = False
        else:
            best_is_spec = b.mean(SPEC) >= b.mean(PLAIN)
            if b.probe_left == 0 and b.probe_from is not None:  # a probe just ended: back off or reset
                confirmed = b.probe_from == best_is_spec
                b.interval = min(2 * b.interval, self.max_probe_every) if confirmed else self.probe_every
                b.probe_from = None
            b.interval = b.interval or self.probe_every
            if b.probe_left == 0 and b.steps_in_mode >= b.interval:
                b.probe_left, b.steps_in_mode, b.probe_from = self.probe_steps + 1, 0, best_is_spec
            if b.probe_left > 0:
                b.probe_left -= 1
                draft = not best_is_spec
            else:
                b.steps_in_mode += 1
                draft = best_is_spec
        self._draft = draft
        self.num_steps += 1
        self.num_plain_steps += not draft
        return draft

    def observe(self, num_decoding: int, has_prefill: bool, num_emitted: int, step_time_s: float) -> None:
        """Record the step just run (after ``decide`` for it)."""
        if has_prefill or step_time_s <= 0 or num_decoding < 1 or self._draft != self._prev_draft:
            return
        mode = SPEC if self._draft else PLAIN
        b = self._bucket(num_decoding)
        b.rates.setdefault(mode, deque(maxlen=self.window)).append(num_emitted / step_time_s)

    def stats(self) -> dict:
        """For /metrics: steps decided and steps without drafting, and each bucket's mean rates."""
        return {"num_steps": self.num_steps, "num_plain_steps": self.num_plain_steps,
                "buckets": {str(n): {SPEC: b.mean(SPEC), PLAIN: b.mean(PLAIN)} for n, b in sorted(self.buckets.items())}}
