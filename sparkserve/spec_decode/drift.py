"""Online calibration drift: is the drafter's confidence still calibrated on live traffic?

The planner trusts survival a_k = prod_{i<=k} c_i as P(drafts 1..k all accepted). Offline STS
(sequential temperature scaling, DSpark paper §3.2.1; DSPARK.md §1.8) fitted c_k = sigmoid(z_k / T_k)
on held-out rollouts; live traffic (other prompts, other sampling temperatures) can drift away.

Per verify round the engine feeds the confidences the planner saw (or the raw logits z), the verify
length l and the number of accepted drafts a. Position k (0-based, k < l) then has prediction
a_{k+1} and label 1[a > k] (prefix acceptance, the DeepSpec evaluator's convention); positions
past l were not verified and carry no label. Over a sliding window of rounds this module keeps the
per-position 20-bin ECE (sum_b n_b |mean pred_b - mean label_b| / n, equal-width bins) and the
count-weighted ECE over positions. A finite window never shows ECE 0 even when calibrated (20 bins
of binomial noise: ~0.03 at 1000 labels), so drift means ECE above its noise floor (``ece_floor``,
estimated from the predictions alone) by more than ``ece_bound``. Every ``check_every`` rounds, on
drift, it refits the temperatures on the most recent ``max_fit_samples`` labelled rows per
position: left to right, a 1-D grid search over ``grid`` (<= a few hundred values) minimising the
ECE of prod_{i<k} sigmoid(z_i / T_i*) * sigmoid(z_k / T), earlier T_i* fixed (the paper's STS). New
temperatures are kept only if they lower the window's ECE. Cost: O(len(grid) * max_fit_samples) per
position, numpy only.

Pure data in, plain data out: the engine applies ``temperatures`` to the drafter (e.g.
``DSparkProposer.confidence_temperatures``) when ``observe`` returns True. Raw logits are recovered
from confidences as logit(c) * T with the temperatures current at ``observe`` time.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np

_EPS = 1e-7


def default_grid() -> np.ndarray:
    """200 log-spaced temperatures in [0.25, 8]."""
    return np.geomspace(0.25, 8.0, 200)


def ece(pred: np.ndarray, label: np.ndarray, num_bins: int = 20) -> float:
    """Equal-width-bin expected calibration error of predictions in [0, 1] against 0/1 labels."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.size == 0:
        return 0.0
    return float(_ece_rows(pred[None, :], np.asarray(label, dtype=np.float64), num_bins)[0])


def _ece_rows(pred: np.ndarray, label: np.ndarray, num_bins: int) -> np.ndarray:
    """ECE of every row of ``pred`` [G, n] against ``label`` [n] -> [G], vectorised with bincount."""
    num_rows, n = pred.shape
    bins = np.minimum((pred * num_bins).astype(np.int64), num_bins - 1)  # [G, n]
    flat = (bins + num_bins * np.arange(num_rows)[:, None]).ravel()
    sum_pred = np.bincount(flat, weights=pred.ravel(), minlength=num_rows * num_bins)
    sum_label = np.bincount(flat, weights=np.broadcast_to(label, pred.shape).ravel(),
                            minlength=num_rows * num_bins)
    return np.abs(sum_pred - sum_label).reshape(num_rows, num_bins).sum(axis=1) / n


def ece_noise_floor(pred: np.ndarray, num_bins: int = 20) -> float:
    """The ECE a perfectly calibrated predictor shows on these predictions by chance, to first order:
    sum_b sqrt(2/pi) * sqrt(sum_{i in b} p_i (1 - p_i)) / n (the mean |binomial noise| of each bin's
    label sum). Finite windows never show ECE 0; drift is ECE well above this floor."""
    pred = np.asarray(pred, dtype=np.float64)
    if pred.size == 0:
        return 0.0
    bins = np.minimum((pred * num_bins).astype(np.int64), num_bins - 1)
    var = np.bincount(bins, weights=pred * (1.0 - pred), minlength=num_bins)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(var).sum() / pred.size)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class CalibrationDrift:
    """Sliding-window calibration monitor with bounded-cost STS refits (module docstring).

    ``ece`` / ``ece_per_position``: the window's calibration under the current temperatures (updated at
    every check and refit); ``ece_floor``: the chance ECE of a calibrated predictor on that window;
    ``num_refits``: refits that were applied; ``temperatures``: current T_k.
    """

    def __init__(self, num_positions: int, temperatures: Sequence[float] | None = None, *,
                 window: int = 4096, num_bins: int = 20, ece_bound: float = 0.03, check_every: int = 256,
                 min_rounds: int = 512, max_fit_samples: int = 4096, grid: Sequence[float] | None = None):
        if num_positions < 1:
            raise ValueError(f"num_positions must be >= 1, got {num_positions}")
        self.num_positions = num_positions
        temps = list(temperatures) if temperatures is not None else []
        self.temperatures: list[float] = [float(t) for t in temps[:num_positions]] + \
            [1.0] * max(num_positions - len(temps), 0)
        self.num_bins = num_bins
        self.ece_bound = ece_bound
        self.check_every = check_every
        self.min_rounds = min_rounds
        self.max_fit_samples = max_fit_samples
        self.grid = np.asarray(default_grid() if grid is None else grid, dtype=np.float64)
        self._rounds: deque[tuple[tuple[float, ...], int]] = deque(maxlen=window)  # (raw logits [l], a)
        self.num_rounds = 0
        self.num_refits = 0
        self.num_rejected_refits = 0
        self.ece = 0.0
        self.ece_floor = 0.0  # what a calibrated predictor would show on this window by chance
        self.ece_per_position: list[float] = [0.0] * num_positions

    def observe(self, confidences: Sequence[float] | None, num_verified: int, num_accepted: int, *,
                logits: Sequence[float] | None = None) -> bool:
        """One verify round. Returns True when it refitted the temperatures (apply them)."""
        num_verified = min(int(num_verified), self.num_positions)
        if num_verified <= 0:
            return False
        if logits is not None:
            z = [float(x) for x in logits[:num_verified]]
        elif confidences is not None and len(confidences) >= num_verified:
            c = np.clip(np.asarray(confidences[:num_verified], dtype=np.float64), _EPS, 1.0 - _EPS)
            z = (np.log(c / (1.0 - c)) * np.asarray(self.temperatures[:num_verified])).tolist()
        else:
            return False
        self._rounds.append((tuple(z), max(0, min(int(num_accepted), num_verified))))
        self.num_rounds += 1
        if self.num_rounds % self.check_every or len(self._rounds) < self.min_rounds:
            return False
        self.update_ece()
        if self.ece - self.ece_floor <= self.ece_bound:
            return False
        return self.refit()

    # ---- window arrays ----------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Z [N, K] raw logits (0 where unverified), Y [N, K] prefix labels, M [N, K] verified mask."""
        n, k = len(self._rounds), self.num_positions
        z = np.zeros((n, k))
        lengths = np.zeros(n, dtype=np.int64)
        accepted = np.zeros(n, dtype=np.int64)
        for i, (zs, a) in enumerate(self._rounds):
            z[i, : len(zs)] = zs
            lengths[i], accepted[i] = len(zs), a
        positions = np.arange(k)[None, :]
        return z, (accepted[:, None] > positions).astype(np.float64), lengths[:, None] > positions

    def _ece_of(self, temperatures: Sequence[float], z, y, m, with_floor: bool = False):
        """(count-weighted ECE, per-position ECE[, count-weighted noise floor])."""
        survival = np.cumprod(_sigmoid(z / np.asarray(temperatures)[None, :]), axis=1)
        per_pos, total_err, total_floor, total_n = [], 0.0, 0.0, 0
        for k in range(self.num_positions):
            rows = m[:, k]
            n = int(rows.sum())
            e = ece(survival[rows, k], y[rows, k], self.num_bins) if n else 0.0
            per_pos.append(e)
            total_err += e * n
            if with_floor and n:
                total_floor += ece_noise_floor(survival[rows, k], self.num_bins) * n
            total_n += n
        mean = total_err / total_n if total_n else 0.0
        if with_floor:
            return mean, per_pos, (total_floor / total_n if total_n else 0.0)
        return mean, per_pos

    def update_ece(self) -> float:
        """Recompute ``ece``, ``ece_per_position`` and ``ece_floor`` on the window (current temperatures)."""
        if self._rounds:
            self.ece, self.ece_per_position, self.ece_floor = self._ece_of(self.temperatures, *self._arrays(),
                                                                           with_floor=True)
        return self.ece

    # ---- refit ------------------------------------------------------------------------------
    def fit_temperatures(self) -> list[float]:
        """STS on the window's most recent labelled rows (left to right, earlier T fixed)."""
        z, y, m = self._arrays()
        fitted = list(self.temperatures)
        prefix = np.ones(len(z))  # prod_{i<k} sigmoid(z_i / T_i*)
        for k in range(self.num_positions):
            rows = np.flatnonzero(m[:, k])[-self.max_fit_samples:]
            if rows.size:
                pred = prefix[rows][None, :] * _sigmoid(z[rows, k][None, :] / self.grid[:, None])  # [G, n]
                fitted[k] = float(self.grid[int(np.argmin(_ece_rows(pred, y[rows, k], self.num_bins)))])
            prefix = prefix * _sigmoid(z[:, k] / fitted[k])
        return fitted

    def refit(self) -> bool:
        """Fit new temperatures; keep them if they lower the window ECE. True if applied."""
        z, y, m = self._arrays()
        before, _ = self._ece_of(self.temperatures, z, y, m)
        fitted = self.fit_temperatures()
        after, per_pos, floor = self._ece_of(fitted, z, y, m, with_floor=True)
        if after >= before:
            self.num_rejected_refits += 1
            return False
        self.temperatures, self.ece, self.ece_per_position, self.ece_floor = fitted, after, per_pos, floor
        self.num_refits += 1
        return True

    def stats(self) -> dict:
        """For /metrics."""
        return {"ece": self.ece, "ece_floor": self.ece_floor, "ece_per_position": list(self.ece_per_position),
                "num_refits": self.num_refits,
                "num_rejected_refits": self.num_rejected_refits, "num_rounds": self.num_rounds,
                "temperatures": list(self.temperatures)}
