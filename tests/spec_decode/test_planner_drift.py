"""Online calibration drift (``spec_decode/drift.py``): ECE from live verify outcomes and bounded STS refits."""
from __future__ import annotations

import numpy as np
import pytest

from sparkserve.spec_decode import drift as drift_module
from sparkserve.spec_decode.drift import CalibrationDrift, ece, ece_noise_floor

GAMMA = 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def stream(rng: np.random.Generator, num_rounds: int, true_temps, served_temps, verify_all: bool = True):
    """Rounds of (confidences as served, l, a): raw logits z_k ~ N(0.8, 1.5); the truth is
    P(d_k accepted | prefix accepted) = sigmoid(z_k / true_T_k); the drafter serves sigmoid(z_k / T_k)."""
    for _ in range(num_rounds):
        z = rng.normal(0.8, 1.5, GAMMA)
        accept = rng.random(GAMMA) < sigmoid(z / np.asarray(true_temps))
        a = GAMMA if accept.all() else int(np.argmin(accept))
        length = GAMMA if verify_all else int(rng.integers(1, GAMMA + 1))
        yield sigmoid(z / np.asarray(served_temps)).tolist(), length, min(a, length)


def test_ece_definition_and_noise_floor():
    assert ece(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.1)
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    chance = np.mean([ece(p, rng.random(1000) < p) for _ in range(50)])  # calibrated by construction
    assert ece_noise_floor(p) == pytest.approx(chance, rel=0.15)
    assert ece(np.array([0.55, 0.56]), np.array([1, 0])) == pytest.approx(0.055)  # one bin: |0.555 - 0.5|
    assert ece(np.array([]), np.array([])) == 0.0


def test_miscalibrated_stream_triggers_a_refit_that_lowers_ece():
    """The confidence head became overconfident (true T = 2.5, served with T = 1): ECE drifts past the
    bound, a refit brings it down and recovers temperatures near the truth; served with the new
    temperatures the stream then stays calibrated and needs no further refit."""
    rng = np.random.default_rng(0)
    true = [2.5, 2.0, 2.0, 1.5]
    drift = CalibrationDrift(GAMMA, [1.0] * GAMMA, window=2048, check_every=256, min_rounds=1024,
                             ece_bound=0.03)
    refits = [drift.observe(c, n, a) for c, n, a in stream(rng, 1023, true, drift.temperatures)]
    assert not any(refits) and drift.num_refits == 0
    before = drift.update_ece()
    assert before > 0.08 and before - drift.ece_floor > 0.05
    c, n, a = next(stream(rng, 1, true, drift.temperatures))
    assert drift.observe(c, n, a) is True and drift.num_refits == 1
    assert drift.ece < 0.4 * before and drift.ece < drift.ece_floor + 0.01
    assert drift.temperatures[0] == pytest.approx(2.5, rel=0.2)
    for c, n, a in stream(rng, 2048, true, drift.temperatures):
        drift.observe(c, n, a)
    assert drift.num_refits == 1 and drift.update_ece() < drift.ece_floor + 0.01
    assert drift.stats()["num_refits"] == 1 and len(drift.stats()["ece_per_position"]) == GAMMA


def test_calibrated_stream_never_refits_and_partial_verification_is_handled():
    rng = np.random.default_rng(1)
    true = [1.3, 1.0, 0.8, 1.0]
    drift = CalibrationDrift(GAMMA, true, window=2048, check_every=256, min_rounds=512, ece_bound=0.03)
    for c, n, a in stream(rng, 2048, true, true, verify_all=False):
        drift.observe(c, n, a)
    assert drift.num_refits == 0 and drift.num_rounds == 2048
    drift.update_ece()
    assert 0.01 < drift.ece < drift.ece_floor + 0.01  # a calibrated window still shows chance ECE


def test_observe_ignores_rounds_without_labels_and_accepts_logits():
    drift = CalibrationDrift(3, [2.0, 1.0, 1.0], check_every=10, min_rounds=10)
    assert drift.observe([0.9, 0.9, 0.9], 0, 0) is False  # nothing verified
    assert drift.observe(None, 2, 1) is False  # no confidences, no logits
    assert drift.num_rounds == 0
    drift.observe([sigmoid(1.0 / 2.0)], 1, 1)
    drift.observe(None, 2, 1, logits=[1.0, -1.0])
    z, y, m = drift._arrays()
    assert z[0, 0] == pytest.approx(1.0) and z[1, :2].tolist() == [1.0, -1.0]  # raw logits = logit(c) * T
    assert y.tolist() == [[1, 0, 0], [1, 0, 0]] and m.tolist() == [[True, False, False], [True, True, False]]


def _window(drift: CalibrationDrift, rounds) -> CalibrationDrift:
    for c, _, a in rounds:
        drift._rounds.append((tuple(np.log(np.asarray(c) / (1 - np.asarray(c)))), a))
    return drift


def test_refit_cost_is_bounded(monkeypatch):
    """A refit reads at most ``max_fit_samples`` rows per position (the most recent ones): each grid
    search is one [len(grid), <= max_fit_samples] ECE evaluation, and the fit equals a fit on only the
    last ``max_fit_samples`` rounds. The older rounds come from a differently miscalibrated stream, so
    a fit that read them would land elsewhere."""
    cap, grid = 300, np.geomspace(0.5, 4, 50)
    rng = np.random.default_rng(2)
    old = list(stream(rng, 700, [0.6] * GAMMA, [1.0] * GAMMA))
    recent = list(stream(rng, cap, [3.0] * GAMMA, [1.0] * GAMMA))
    drift = _window(CalibrationDrift(GAMMA, max_fit_samples=cap, grid=grid), old + recent)
    shapes = []
    real = drift_module._ece_rows
    monkeypatch.setattr(drift_module, "_ece_rows", lambda pred, *a: shapes.append(pred.shape) or real(pred, *a))
    temps = drift.fit_temperatures()
    monkeypatch.undo()
    assert shapes == [(len(grid), cap)] * GAMMA
    assert len(temps) == GAMMA and all(t in drift.grid for t in temps)
    assert temps == _window(CalibrationDrift(GAMMA, max_fit_samples=10_000, grid=grid), recent).fit_temperatures()
    uncapped = _window(CalibrationDrift(GAMMA, max_fit_samples=10_000, grid=grid), old + recent).fit_temperatures()
    assert uncapped[0] < 1.5 < 2.0 < temps[0]  # the sensitivity this test relies on
