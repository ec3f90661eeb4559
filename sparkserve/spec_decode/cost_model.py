"""The cost table: engine steps per second SPS(B) as a function of the step's forward tokens B.

The verify-length planner (``planner.py``, DSpark paper §3.2.2 Algorithm 1) trades expected accepted
tokens against step time, so it needs t(B): the wall time of one engine step (target forward over B
tokens + sampling/verification + the drafter) for B = prefill + anchor + draft tokens. The table
holds t at a grid of bucket sizes ("buckets", 1 .. token budget) and interpolates linearly between
them; SPS(B) = 1 / t(B). It is built by ``profile.profile_step_times`` at engine start (or loaded
from the disk cache) and refined online from every step's measured ``(B, step_time_s)``.

Online refinement is a robust LMS update on the piecewise-linear basis: the residual r = t - t̂(B)
is Huber-clipped at ``HUBER_K`` robust scales and moves the two surrounding buckets by
``learning_rate * w_i / sum(w^2) * clip(r)`` (normalised LMS: the prediction at B itself moves by
``learning_rate * clip(r)`` wherever B falls between buckets). Each bucket keeps a robust scale (an
exponentially weighted mean absolute residual, itself clipped at ``SCALE_CLIP_K`` scales). One outlier
therefore moves a bucket by at most ``learning_rate * HUBER_K * scale`` (about one percent), while a
sustained shift makes the scale grow geometrically (x(1 + scale_rate * (SCALE_CLIP_K - 1)) per step)
until the clip no longer binds, so the table follows a real slowdown within ~100-150 steps over the
loads actually seen (buckets at the edge of the observed range, seen least, lag most; buckets never
seen keep their profiled values).

Persistence: JSON in ``cache_dir()`` (``$SPARKSERVE_CACHE_DIR/cost`` or ``~/.cache/sparkserve/cost``),
one file per ``CostKey`` (model, drafter, dtype, backend, hardware, token budget), named by a hash
of the key; the key is stored inside and checked on load.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Protocol, Sequence

log = logging.getLogger("sparkserve.spec_decode.cost_model")

FORMAT_VERSION = 1
HUBER_K = 2.0  # residuals are clipped at this many robust scales before they move a bucket
SCALE_CLIP_K = 3.0  # ... and at this many when they update the scale itself
_MIN_TIME_S = 1e-9


class StepRate(Protocol):
    """What a planner needs from a cost model: steps per second for a step of ``num_tokens`` tokens."""

    def sps(self, num_tokens: int) -> float: ...


@dataclass(frozen=True)
class CostKey:
    """What a measured table is valid for. Any field change means a different file on disk."""

    model: str
    drafter: str
    dtype: str
    backend: str
    hardware: str
    token_budget: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def filename(self) -> str:
        return f"cost-{self.digest()}.json"


def cache_dir(root: str | None = None) -> str:
    """Where cost tables live: ``root/cost``, root = ``root`` or $SPARKSERVE_CACHE_DIR or ~/.cache/sparkserve."""
    root = root or os.environ.get("SPARKSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                           "sparkserve")
    return os.path.join(root, "cost")


def describe_hardware(device=None) -> str:
    """A stable string naming the machine a table was measured on (GPU name + CUDA, or CPU + threads)."""
    import platform

    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return f"cuda:{torch.cuda.get_device_name(index)}:cuda{torch.version.cuda}:torch{torch.__version__}"
    return (f"cpu:{platform.machine()}:{platform.processor() or 'unknown'}:{os.cpu_count()}cores:"
            f"{torch.get_num_threads()}threads:torch{torch.__version__}")


class CostTable:
    """Step time t(B) on a bucket grid; piecewise-linear in between, SPS(B) = 1 / t(B).

    Below the first bucket t is the first bucket's value; above the last it extends the last segment's
    slope (never decreasing). ``observe(B, t)`` refines it online (module docstring). ``age_s``: seconds
    since the base measurements were taken (the profile, possibly loaded from disk);
    ``prediction_error``: mean |t̂ - t| / t over the last ``error_window`` observations, t̂ predicted
    before the update (0.0 before any).
    """

    def __init__(self, num_tokens: Sequence[int], step_times_s: Sequence[float],
                 scales_s: Sequence[float] | None = None, *, key: CostKey | None = None,
                 learning_rate: float = 0.3, scale_rate: float = 0.3, min_rel_scale: float = 0.02,
                 error_window: int = 256, clock: Callable[[], float] = time.time,
                 profiled_at: float | None = None, updated_at: float | None = None, num_updates: int = 0):
        buckets = [int(b) for b in num_tokens]
        if not buckets or len(buckets) != len(step_times_s):
            raise ValueError("a cost table needs one step time per bucket, and at least one bucket")
        if any(b < 1 for b in buckets) or any(b2 <= b1 for b1, b2 in zip(buckets, buckets[1:])):
            raise ValueError(f"buckets must be increasing positive token counts, got {buckets}")
        times = [float(t) for t in step_times_s]
        if any(not (t > 0 and math.isfinite(t)) for t in times):
            raise ValueError(f"step times must be positive and finite, got {times}")
        self.buckets: list[int] = buckets  # [num_buckets] token counts
        self.step_times_s: list[float] = times  # [num_buckets]
        self.min_rel_scale = min_rel_scale
        scales = list(scales_s) if scales_s is not None else [0.0] * len(times)
        self.scales_s: list[float] = [max(float(s), min_rel_scale * t) for s, t in zip(scales, times)]
        self.key = key
        self.learning_rate = learning_rate
        self.scale_rate = scale_rate
        self.clock = clock
        now = clock()
        self.profiled_at = now if profiled_at is None else profiled_at
        self.updated_at = self.profiled_at if updated_at is None else updated_at
        self.num_updates = num_updates
        self.num_ignored = 0
        self._errors: deque[float] = deque(maxlen=error_window)

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_sps(cls, sps: Mapping[int, float], **kwargs) -> "CostTable":
        """From steps-per-second values, e.g. the paper's {1: 1.0, 2: 0.5, 3: 0.45}."""
        items = sorted(sps.items())
        return cls([b for b, _ in items], [1.0 / s for _, s in items], **kwargs)

    @classmethod
    def from_function(cls, step_time_s: Callable[[int], float], num_tokens: Sequence[int], **kwargs) -> "CostTable":
        return cls(list(num_tokens), [step_time_s(b) for b in num_tokens], **kwargs)

    # ---- lookups ----------------------------------------------------------------------------
    def step_time_s(self, num_tokens: float) -> float:
        b, t = self.buckets, self.step_times_s
        if num_tokens <= b[0] or len(b) == 1:
            return t[0]
        if num_tokens >= b[-1]:
            slope = max((t[-1] - t[-2]) / (b[-1] - b[-2]), 0.0)
            return t[-1] + slope * (num_tokens - b[-1])
        i = bisect.bisect_right(b, num_tokens) - 1  # b[i] <= B < b[i + 1]
        w = (num_tokens - b[i]) / (b[i + 1] - b[i])
        return t[i] + w * (t[i + 1] - t[i])

    def sps(self, num_tokens: float) -> float:
        """Steps per second for a step of ``num_tokens`` forward tokens."""
        return 1.0 / self.step_time_s(num_tokens)

    def _weights(self, num_tokens: float) -> list[tuple[int, float]]:
        b = self.buckets
        if num_tokens <= b[0]:
            return [(0, 1.0)]
        if num_tokens >= b[-1]:
            return [(len(b) - 1, 1.0)]
        i = bisect.bisect_right(b, num_tokens) - 1
        w = (num_tokens - b[i]) / (b[i + 1] - b[i])
        return [(i, 1.0 - w), (i + 1, w)]

    # ---- online refinement ------------------------------------------------------------------
    def observe(self, num_tokens: int, step_time_s: float) -> None:
        """Fold in one measured step (module docstring); ignores non-positive/non-finite input."""
        if not (num_tokens >= 1 and step_time_s > 0 and math.isfinite(step_time_s)):
            self.num_ignored += 1
            return
        predicted = self.step_time_s(num_tokens)
        self._errors.append(abs(predicted - step_time_s) / step_time_s)
        residual = step_time_s - predicted
        weights = self._weights(num_tokens)
        norm = sum(w * w for _, w in weights)  # normalised LMS: t̂(B) moves by lr * clip(r) at any B
        for i, w in weights:
            if w <= 0.0:
                continue
            scale = self.scales_s[i]
            clipped = max(-HUBER_K * scale, min(HUBER_K * scale, residual))
            value = max(self.step_times_s[i] + self.learning_rate * w / norm * clipped, _MIN_TIME_S)
            target_scale = min(abs(residual), SCALE_CLIP_K * scale)
            scale += self.scale_rate * w * (target_scale - scale)
            self.step_times_s[i] = value
            self.scales_s[i] = max(scale, self.min_rel_scale * value)
        self.num_updates += 1
        self.updated_at = self.clock()

    @property
    def prediction_error(self) -> float:
        return sum(self._errors) / len(self._errors) if self._errors else 0.0

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
                "scales_s": list(self.scales_s), "profiled_at": self.profiled_at,
                "updated_at": self.updated_at, "num_updates": self.num_updates}

    @classmethod
    def from_dict(cls, data: dict, **kwargs) -> "CostTable":
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"cost table format {data.get('version')!r}, expected {FORMAT_VERSION}")
        key = CostKey(**data["key"]) if data.get("key") else None
        return cls(data["buckets"], data["step_times_s"], data.get("scales_s"), key=key,
                   profiled_at=data.get("profiled_at"), updated_at=data.get("updated_at"),
                   num_updates=int(data.get("num_updates", 0)), **kwargs)

    def save(self, path: str) -> str:
        """Write JSON atomically (temp file + rename); returns ``path``."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cost-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str, **kwargs) -> "CostTable":
        with open(path) as f:
            return cls.from_dict(json.load(f), **kwargs)

    def save_cached(self, root: str | None = None) -> str:
        """Save under ``cache_dir(root)`` by this table's key; returns the path."""
        if self.key is None:
            raise ValueError("a cost table without a CostKey cannot go to the cache")
        return self.save(os.path.join(cache_dir(root), self.key.filename()))

    @classmethod
    def load_cached(cls, key: CostKey, root: str | None = None, **kwargs) -> "CostTable | None":
        """The cached table for ``key``; None if absent, unreadable, of another format or another key."""
        path = os.path.join(cache_dir(root), key.filename())
        if not os.path.exists(path):
            return None
        try:
            table = cls.load(path, **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable cost table %s: %s", path, e)
            return None
        if table.key != key:
            log.warning("ignoring cost table %s: it was measured for %s", path, table.key)
            return None
        return table
