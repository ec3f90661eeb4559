"""``sparkserve train eval``: the engine runs each drafter at T=1 and T=0 over each prompt file and the
report holds tau per dataset, cond@k, and calibration before/after STS with PNG plots."""
import json
import os
import shutil

from sparkserve.cli import main
from sparkserve.train.drafter.calibrate import write_calibration
from sparkserve.train.drafter.metrics import cond_accept, tau
import torch


def test_metrics_tau_and_cond_accept():
    verified = torch.tensor([4, 4, 4, 2, 4])
    accepted = torch.tensor([0, 1, 4, 2, 2])
    assert tau(accepted + 1) == (1 + 2 + 5 + 3 + 3) / 5
    cond, den = cond_accept(verified, accepted, 4)
    # k=0: 5 rounds reach it, 4 accept; k=1: 4 reach (a>=1, l>1), 3 accept; k=2: a>=2 & l>2 -> 2 rounds, 1 accepts
    assert den == [5, 4, 2, 1] and cond == [4 / 5, 3 / 4, 1 / 2, 1.0]


def test_eval_writes_report(tmp_path, target, random_drafter, prompt_files):
    dspark = str(tmp_path / "dspark")
    shutil.copytree(random_drafter("dspark"), dspark)
    write_calibration(dspark, {"temperatures": [1.5, 1.2, 1.0, 0.8]})
    out = str(tmp_path / "report")
    assert main(["train", "eval", "--target", target, "--drafter", f"dspark={dspark}",
                 "--drafter", f"eagle3={random_drafter('eagle3')}", "--prompts", *prompt_files, "--out", out,
                 "--max-tokens", "16", "--max-prompts", "3", "--threads", "1"]) == 0
    files = set(os.listdir(out))
    assert {"report.md", "report.json", "cond_accept_T1.png", "cond_accept_T0.png", "reliability_dspark_T1.png",
            "reliability_dspark_T0.png"} <= files
    assert not any(f.startswith("reliability_eagle3") for f in files)  # no confidence head
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    assert report["datasets"] == ["demo-a", "demo-b"]
    for label in ("dspark", "eagle3"):
        for t in ("T=1", "T=0"):
            run = report["drafters"][label]["runs"][t]
            assert all(1.0 <= v <= 5.0 for v in run["tau"].values()) and run["rounds"]["demo-a"] > 0
            assert len(run["cond_accept"]) == 4 and run["cond_accept_n"][0] > 0
    cal = report["drafters"]["dspark"]["runs"]["T=1"]["calibration"]
    assert cal["before"]["count"] > 0 and cal["after"]["count"] == cal["before"]["count"]
    assert len(cal["cross_fitted"]["ece"]) == 4 and sum(cal["cross_fitted"]["count"]) == cal["before"]["count"]
    assert "calibration" not in report["drafters"]["eagle3"]["runs"]["T=1"]
    md = open(os.path.join(out, "report.md")).read()
    assert "| drafter | demo-a | demo-b | mean |" in md and "ECE after STS" in md and "cond_accept_T0.png" in md


def test_round_recorder_agrees_with_engine_counters(target, random_drafter):
    from sparkserve import LLM
    from sparkserve.train.drafter.rollouts import RoundRecorder, confidence_tensors, run_prompts

    llm = LLM(target, max_model_len=128, speculative_config={"method": "dspark", "model": random_drafter("dspark")})
    recorder = RoundRecorder(llm)
    rounds, outs = run_prompts(llm, recorder, [[5, 6, 7], [80, 81], [9] * 5], temperature=1.0, max_tokens=20)
    stats = llm.engine.stats().spec_decode.total
    assert len(rounds) == stats.num_drafts
    if all(r.emitted == r.accepted + 1 for r in rounds):  # no round ended by a stop token
        assert sum(r.verified for r in rounds) == stats.num_verified_draft_tokens
        assert [sum(r.accepted > k for r in rounds) for k in range(4)] == stats.accepted_per_pos
    v, a, z = confidence_tensors(rounds, 4)
    assert z.shape == (len(rounds), 4) and bool((a <= v).all())
