"""The cost table: step time t(B, R) of one engine step, for B forward tokens and R drafting requests.

The verify-length planner (``planner.py``, DSpark paper §3.2.2 Algorithm 1) trades expected accepted
tokens against step time, so it needs the wall time of one engine step: the target forward over
B = prefill + anchor + verified draft tokens, sampling/verification, and the drafter. B alone does not
set it: every request that drafts after the step adds a whole draft block (γ drafter steps and their
draws) whatever it verified, so at equal B a step of 8 requests verifying 1 draft each costs far more
than one request verifying 7 plus a prefill chunk. The table therefore keys on (B, R), R = requests
that draft after the step (0 when the draft gate turned drafting off). The planner knows R when it
plans (the requests carrying drafts), and R does not change with the verify lengths it picks.

Model: t(B, R) = t(B, 0) + d(R). t(B, 0), a step without drafting, is piecewise linear on token
buckets (below the first bucket the first value; above the last, the last segment's slope, never
decreasing); d(R), what R drafting requests add (the drafter's forward over R blocks, its γ
sequential draws, the context-cache writes), is piecewise linear on drafting buckets
``num_drafting`` (1, 2, 4, ... requests), d(0) = 0, beyond the last bucket the last two buckets'
per-request slope (never decreasing). The cost of one more verified token at a fixed R is t(B, 0)'s
slope, shared by every R: it is what the plain steps (the most frequent) measure best. A table
without drafting buckets is the B-only curve (d = 0); SPS(B, R) = 1 / t(B, R). It is built by
``profile.profile_step_times`` at engine start (or loaded from the disk cache, ``cost_cache.py``) and
refined online from every step's measured ``(B, R, step_time_s)``: a plain step (R = 0) refines
t(B, 0), a drafting step refines d(R).

Online refinement is a robust LMS update on the piecewise-linear basis of the curve it refines: the
residual r = t - t̂(B, R) is Huber-clipped at ``HUBER_K`` robust scales (the interpolated scale of
the surrounding points) and moves the two surrounding points by ``learning_rate * w_i / sum(w^2) *
clip(r)`` (normalised LMS: the prediction at (B, R) itself moves by ``learning_rate * clip(r)``). Each
point keeps a robust scale (an exponentially weighted mean absolute residual, itself clipped at
``SCALE_CLIP_K`` scales). One outlier therefore moves a point by at most ``learning_rate * HUBER_K *
scale`` (about one percent), while a sustained shift makes the scale grow geometrically
(x(1 + scale_rate * (SCALE_CLIP_K - 1)) per step) until the clip no longer binds, so the table follows
a real slowdown within ~100-150 steps over the loads actually seen (points at the edge of the
observed range, seen least, lag most; points never seen keep their profiled values).

``prediction_error``: mean |t̂ - t| / t over the last ``error_window`` observed steps, t̂ predicted
before the update (also per kind of step: "plain" R = 0, "drafting" R > 0).
"""
from __future__ import annotations

import bisect
import json
import math
import time
from collections import deque
from dataclasses import asdict
from typing import Callable, Mapping, Protocol, Sequence

from sparkserve.spec_decode.cost_cache import (  # noqa: F401  (re-exported: the cost model's public names)
    CostKey,
    OutdatedFormat,
    cache_dir,
    describe_hardware,
    read_cached,
    write_json,
)

FORMAT_VERSION = 2  # 2: t(B, R) with drafting rows; files of format 1 (t(B) only) are ignored, re-profiled
HUBER_K = 2.0  # residuals are clipped at this many robust scales before they move a cell
SCALE_CLIP_K = 3.0  # ... and at this many when they update the scale itself
_MIN_TIME_S = 1e-9

Weights = list[tuple[int, float]]  # (index, weight) pairs of a linear interpolation


class StepRate(Protocol):
    """What a planner needs from a cost model: steps per second for a step of ``num_tokens`` forward
    tokens after which ``num_drafting`` requests draft."""

    def sps(self, num_tokens: int, num_drafting: int = 0) -> float: ...


def segment_weights(points: Sequence[int], x: float) -> Weights:
    """Interpolation weights of ``x`` on increasing ``points``, clamped at both ends."""
    if x <= points[0] or len(points) == 1:
        return [(0, 1.0)]
    if x >= points[-1]:
        return [(len(points) - 1, 1.0)]
    i = bisect.bisect_right(points, x) - 1
    w = (x - points[i]) / (points[i + 1] - points[i])
    return [(i, 1.0 - w), (i + 1, w)]


def _check_row(times: Sequence[float], num_buckets: int) -> list[float]:
    out = [float(t) for t in times]
    if len(out) != num_buckets:
        raise ValueError(f"a cost table needs one step time per bucket, got {len(out)} for {num_buckets}")
    if any(not (t > 0 and math.isfinite(t)) for t in out):
        raise ValueError(f"step times must be positive and finite, got {out}")
    return out


class CostTable:
    """Step time t(B, R) = t(B, 0) + d(R) (module docstring): ``step_time_s(B, R)``, ``sps(B, R)``,
    ``observe(B, t, R)``.

    ``num_tokens`` [num_buckets] B buckets with ``step_times_s`` [num_buckets] t(B, 0);
    ``num_drafting`` [num_rows] drafting buckets R >= 1 with ``drafting_extra_s`` [num_rows] d(R)
    (none: the B-only table). ``age_s``: seconds since the base measurements were taken (the profile,
    possibly loaded from disk).
    """

    def __init__(self, num_tokens: Sequence[int], step_times_s: Sequence[float],
                 scales_s: Sequence[float] | None = None, *, num_drafting: Sequence[int] = (),
                 drafting_extra_s: Sequence[float] = (), drafting_scales_s: Sequence[float] | None = None,
                 key: CostKey | None = None, learning_rate: float = 0.3, scale_rate: float = 0.3,
                 min_rel_scale: float = 0.02, error_window: int = 256, clock: Callable[[], float] = time.time,
                 profiled_at: float | None = None, updated_at: float | None = None, num_updates: int = 0):
        buckets = [int(b) for b in num_tokens]
        rows = [int(r) for r in num_drafting]
        for name, axis in (("buckets", buckets), ("drafting rows", rows)):
            if (name == "buckets" and not axis) or any(x < 1 for x in axis) or \
                    any(x2 <= x1 for x1, x2 in zip(axis, axis[1:])):
                raise ValueError(f"{name} must be increasing positive counts, got {axis}")
        if len(drafting_extra_s) != len(rows) or any(not (e >= 0 and math.isfinite(e)) for e in drafting_extra_s):
            raise ValueError("a cost table needs one finite extra time >= 0 per drafting bucket")
        self.buckets: list[int] = buckets  # [num_buckets] forward tokens B
        self.step_times_s: list[float] = _check_row(step_times_s, len(buckets))  # [num_buckets] t(B, 0)
        self.num_drafting: list[int] = rows  # [num_rows] drafting requests R
        self.extra_s: list[float] = [float(e) for e in drafting_extra_s]  # [num_rows] d(R) = t(B, R) - t(B, 0)
        self.min_rel_scale = min_rel_scale
        self.scales_s: list[float] = [max(float(s), min_rel_scale * t) for s, t in
                                      zip(scales_s if scales_s is not None else [0.0] * len(buckets), self.step_times_s)]
        self.extra_scales_s: list[float] = [  # [num_rows] noise scale of drafting steps' t
            max(float(s), min_rel_scale * (e + self.step_times_s[0])) for s, e in
            zip(drafting_scales_s if drafting_scales_s is not None else [0.0] * len(rows), self.extra_s)]
        self.key = key
        self.learning_rate = learning_rate
        self.scale_rate = scale_rate
        self.clock = clock
        self.profiled_at = clock() if profiled_at is None else profiled_at
        self.updated_at = self.profiled_at if updated_at is None else updated_at
        self.num_updates = num_updates
        self.num_ignored = 0
        self._errors: dict[str, deque[float]] = {k: deque(maxlen=error_window) for k in ("all", "plain", "drafting")}

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_sps(cls, sps: Mapping[int, float], **kwargs) -> "CostTable":
        """From steps-per-second values, e.g. the paper's {1: 1.0, 2: 0.5, 3: 0.45}."""
        items = sorted(sps.items())
        return cls([b for b, _ in items], [1.0 / s for _, s in items], **kwargs)

    @classmethod
    def from_function(cls, step_time_s: Callable[..., float], num_tokens: Sequence[int],
                      num_drafting: Sequence[int] = (), **kwargs) -> "CostTable":
        """Sampled from ``step_time_s(B)``, or ``step_time_s(B, R)`` when ``num_drafting`` is given (d(R)
        at the smallest bucket B >= R)."""
        if not num_drafting:
            return cls(list(num_tokens), [step_time_s(b) for b in num_tokens], **kwargs)
        at = [min([b for b in num_tokens if b >= r] or [num_tokens[-1]]) for r in num_drafting]
        return cls(list(num_tokens), [step_time_s(b, 0) for b in num_tokens], num_drafting=list(num_drafting),
                   drafting_extra_s=[step_time_s(b, r) - step_time_s(b, 0) for b, r in zip(at, num_drafting)],
                   **kwargs)

    # ---- lookups ----------------------------------------------------------------------------
    def _base(self, num_tokens: float) -> float:
        """t(B, 0): piecewise linear, the last segment extended (never decreasing)."""
        b, t = self.buckets, self.step_times_s
        if len(b) > 1 and num_tokens > b[-1]:
            slope = max((t[-1] - t[-2]) / (b[-1] - b[-2]), 0.0)
            return t[-1] + slope * (num_tokens - b[-1])
        return sum(w * t[i] for i, w in segment_weights(b, num_tokens))

    def _row_weights(self, num_drafting: float) -> Weights:
        """Clamped interpolation weights over the drafting rows; none for R = 0 or a B-only table."""
        return segment_weights(self.num_drafting, num_drafting) if num_drafting > 0 and self.num_drafting else []

    def extra_time_s(self, num_drafting: float) -> float:
        """d(R): what R drafting requests add to a step (0 for R = 0); beyond the last row the last two
        rows' per-request slope (from R = 0 with one row), never decreasing."""
        rows, extra = self.num_drafting, self.extra_s
        d = sum(w * extra[i] for i, w in self._row_weights(num_drafting))
        if rows and num_drafting > rows[-1]:
            prev_r, prev_e = (rows[-2], extra[-2]) if len(rows) > 1 else (0, 0.0)
            d += max((extra[-1] - prev_e) / (rows[-1] - prev_r), 0.0) * (num_drafting - rows[-1])
        return d

    def step_time_s(self, num_tokens: float, num_drafting: float = 0) -> float:
        """Predicted seconds for a step of ``num_tokens`` forward tokens and ``num_drafting`` drafting requests."""
        return self._base(num_tokens) + self.extra_time_s(num_drafting)

    def sps(self, num_tokens: float, num_drafting: float = 0) -> float:
        """Steps per second for a step of ``num_tokens`` forward tokens and ``num_drafting`` drafting requests."""
        return 1.0 / self.step_time_s(num_tokens, num_drafting)

    # ---- online refinement ------------------------------------------------------------------
    def observe(self, num_tokens: int, step_time_s: float, num_drafting: int = 0) -> None:
        """Fold in one measured step (module docstring); ignores non-positive/non-finite input."""
        if not (num_tokens >= 1 and num_drafting >= 0 and step_time_s > 0 and math.isfinite(step_time_s)):
            self.num_ignored += 1
            return
        predicted = self.step_time_s(num_tokens, num_drafting)
        error = abs(predicted - step_time_s) / step_time_s
        for kind in ("all", "drafting" if num_drafting > 0 else "plain"):
            self._errors[kind].append(error)
        # a plain step teaches t(B, 0) (and so every R), a drafting step only what drafting adds
        weights = self._row_weights(num_drafting)
        plain = not weights
        if plain:
            values, scales, floor = self.step_times_s, self.scales_s, _MIN_TIME_S
            weights = segment_weights(self.buckets, num_tokens)
        else:
            values, scales, floor = self.extra_s, self.extra_scales_s, 0.0
        weights = [(i, w) for i, w in weights if w > 0.0]
        residual = step_time_s - predicted
        scale = sum(w * scales[i] for i, w in weights)
        clipped = max(-HUBER_K * scale, min(HUBER_K * scale, residual))
        norm = sum(w * w for _, w in weights)  # normalised LMS: t̂(B, R) moves by lr * clip(r)
        target = min(abs(residual), SCALE_CLIP_K * scale)
        w_max = max(w for _, w in weights)  # the nearest point's scale adapts at the full rate
        for i, w in weights:
            values[i] = max(values[i] + self.learning_rate * w / norm * clipped, floor)
            scales[i] += self.scale_rate * w / w_max * (target - scales[i])
            scales[i] = max(scales[i], self.min_rel_scale * (values[i] if plain else predicted))
        self.num_updates += 1
        self.updated_at = self.clock()

    def error(self, kind: str = "all") -> float:
        """Mean relative prediction error of the last observed steps of ``kind`` ("all", "plain",
        "drafting"); 0.0 before any."""
        errors = self._errors[kind]
        return sum(errors) / len(errors) if errors else 0.0

    @property
    def prediction_error(self) -> float:
        return self.error("all")

    @property
    def age_s(self) -> float:
        return max(self.clock() - self.profiled_at, 0.0)

    @property
    def seconds_since_update(self) -> float:
        return max(self.clock() - self.updated_at, 0.0)

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": FORMAT_VERSION, "key": asdict(self.key) if self.key else None,
                "buckets": list(self.buckets), "step_times_s": list(self.step_times_s),
                "scales_s": list(self.scales_s), "num_drafting": list(self.num_drafting),
                "drafting_extra_s": list(self.extra_s), "drafting_scales_s": list(self.extra_scales_s),
                "profiled_at": self.profiled_at, "updated_at": self.updated_at, "num_updates": self.num_updates}

    @classmethod
    def from_dict(cls, data: dict, **kwargs) -> "CostTable":
        if data.get("version") != FORMAT_VERSION:
            raise OutdatedFormat(f"cost table format {data.get('version')!r}, this build reads {FORMAT_VERSION}")
        key = CostKey(**data["key"]) if data.get("key") else None
        return cls(data["buckets"], data["step_times_s"], data.get("scales_s"), num_drafting=data["num_drafting"],
                   drafting_extra_s=data["drafting_extra_s"], drafting_scales_s=data.get("drafting_scales_s"),
                   key=key, profiled_at=data.get("profiled_at"), updated_at=data.get("updated_at"),
                   num_updates=int(data.get("num_updates", 0)), **kwargs)

    def save(self, path: str) -> str:
        """Write JSON atomically (temp file + rename); returns ``path``."""
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str, **kwargs) -> "CostTable":
        with open(path) as f:
            return cls.from_dict(json.load(f), **kwargs)

    def save_cached(self, root: str | None = None) -> str:
        """Save under ``cache_dir(root)`` by this table's key; returns the path."""
        if self.key is None:
            raise ValueError("a cost table without a CostKey cannot go to the cache")
        return self.save(f"{cache_dir(root)}/{self.key.filename()}")

    @classmethod
    def load_cached(cls, key: CostKey, root: str | None = None, **kwargs) -> "CostTable | None":
        """The cached table for ``key``; None (and a log line) if absent, unreadable, outdated or another key's."""
        return read_cached(lambda path: cls.load(path, **kwargs), key, root)
