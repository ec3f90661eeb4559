"""STS (DSPARK.md §1.8): on synthetic miscalibrated rounds the fitted temperatures recover the truth
and ECE falls; ``calibration.json`` is picked up by ``load_drafter`` and the engine; the
``sparkserve train calibrate`` command collects real rounds through the engine."""
import json
import os
import shutil

import pytest
import torch

from sparkserve import LLM
from sparkserve.cli import main
from sparkserve.models.hf_config import DecoderConfig
from sparkserve.spec_decode.checkpoint import load_drafter
from sparkserve.train.drafter.calibrate import fit_sts, temperature_grid, write_calibration
from sparkserve.train.drafter.metrics import auroc, ece


def synthetic_rounds(true_temps, num_rounds=4000, seed=0):
    """Confidence logits z and rounds whose draft k is accepted with probability sigmoid(z_k / T_k)."""
    gen = torch.Generator().manual_seed(seed)
    gamma = len(true_temps)
    z = torch.randn(num_rounds, gamma, generator=gen) * 1.5 + 1.0
    accept = torch.rand(num_rounds, gamma, generator=gen) < torch.sigmoid(z / torch.tensor(true_temps))
    accepted = accept.long().cumprod(1).sum(1)  # leading accepts
    verified = torch.randint(1, gamma + 1, (num_rounds,), generator=gen)  # some rounds verify fewer
    verified[: num_rounds // 2] = gamma
    return z, verified, torch.minimum(accepted, verified)


def test_sts_recovers_temperatures_and_lowers_ece():
    true = [2.0, 0.6, 3.0, 1.5]
    z, v, a = synthetic_rounds(true)
    out = fit_sts(z, v, a)
    assert out["counts"][0] == 4000 and out["counts"][3] < 4000
    for k in range(4):
        assert abs(out["temperatures"][k] - true[k]) < 0.25 * true[k], out["temperatures"]
        assert out["ece_after"][k] < out["ece_before"][k] and out["ece_after"][k] < 0.03, out
    grid = temperature_grid()
    assert float(grid[0]) == 0.25 and abs(float(grid[-1]) - 8.0) < 1e-9 and len(grid) == 776


def test_metric_definitions():
    pred = torch.tensor([0.05, 0.05, 0.95, 0.95])
    label = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert ece(pred, label) == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)
    assert auroc(pred, label) == pytest.approx(5 / 6)  # 2 of 3 positive pairs won, 1 tied (1/2)
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 0.0])) != auroc(pred, label)  # nan: one class


def test_load_drafter_reads_calibration(tmp_path, target, random_drafter):
    path = str(tmp_path / "dspark")
    shutil.copytree(random_drafter("dspark"), path)
    cfg = DecoderConfig.from_file(target)
    assert load_drafter(path, cfg, num_blocks=8, block_size=4).confidence_temperatures is None
    write_calibration(path, {"temperatures": [1.5, 0.7, 2.0, 1.0]})
    assert load_drafter(path, cfg, num_blocks=8, block_size=4).confidence_temperatures == [1.5, 0.7, 2.0, 1.0]
    dflash = str(tmp_path / "dflash")
    shutil.copytree(random_drafter("dflash"), dflash)
    write_calibration(dflash, {"temperatures": [2.0]})  # no confidence head: nothing to scale
    assert load_drafter(dflash, cfg, num_blocks=8, block_size=4).confidence_temperatures is None
    with open(os.path.join(path, "calibration.json"), "w") as f:
        json.dump({"temperatures": [0.0]}, f)
    with pytest.raises(ValueError, match="positive"):
        load_drafter(path, cfg, num_blocks=8, block_size=4)


def test_calibrate_command(tmp_path, target, random_drafter, prompt_files):
    path = str(tmp_path / "dspark")
    shutil.copytree(random_drafter("dspark"), path)
    assert main(["train", "calibrate", "--drafter", path, "--target", target, "--prompts", *prompt_files,
                 "--temperature", "1.0", "--max-tokens", "24", "--threads", "1"]) == 0
    with open(os.path.join(path, "calibration.json")) as f:
        cal = json.load(f)
    assert len(cal["temperatures"]) == 4 and cal["serving_temperature"] == 1.0 and cal["num_prompts"] == 8
    assert cal["counts"][0] == cal["num_rounds"] > 20
    assert cal["ece_after"][0] <= cal["ece_before"][0] + 1e-12
    llm = LLM(target, max_model_len=128, speculative_config={"method": "dspark", "model": path})
    assert llm.engine.runner.proposer.confidence_temperatures == cal["temperatures"]


def test_cross_fitted_sts_scores_held_out_rounds():
    from sparkserve.train.drafter.evaluate import cross_fitted_sts
    from sparkserve.train.drafter.metrics import calibration_summary

    z, v, a = synthetic_rounds([2.0, 0.6, 3.0, 1.5], num_rounds=6000, seed=1)
    cv = cross_fitted_sts(z, v, a)
    before = calibration_summary(z, v, a)
    assert cv["count"] == [r["count"] for r in before["per_position"]]  # every labelled row scored once
    assert cv["weighted"] < 0.03 < before["weighted"]["ece"]
    assert all(e is not None and e < 0.04 for e in cv["ece"])
