"""``sparkserve train calibrate``: Sequential Temperature Scaling of DSpark's confidences (DSPARK.md §1.8).

Held-out verify rounds are collected through the engine at the serving temperature with a fixed
verify length (``rollouts.py``): raw confidence logits z_{n,k} and prefix labels y_{n,k} = [a_n > k]
for the positions that were verified. Then, for k = 1..gamma in order, T_k is the grid value that
minimises the 20-bin ECE of P_{n,k} = prod_{i<k} sigmoid(z_{n,i} / T_i*) * sigmoid(z_{n,k} / T_k) with
the earlier T_i* fixed. Serving uses c_k = sigmoid(z_k / T_k*): ``load_drafter`` reads
``calibration.json`` next to the drafter's weights and hands the temperatures to the proposer.
"""
from __future__ import annotations

import json
import os

import torch

from sparkserve.spec_decode.checkpoint import CALIBRATION_FILE
from sparkserve.train.drafter.metrics import NUM_BINS, cumulative_confidence, ece, ece_batched, prefix_labels

GRID = (0.25, 8.0, 0.01)  # T_k candidates: start, stop (inclusive), step


def temperature_grid(lo: float = GRID[0], hi: float = GRID[1], step: float = GRID[2]) -> torch.Tensor:
    return torch.arange(round((hi - lo) / step) + 1, dtype=torch.float64) * step + lo


def fit_sts(logits: torch.Tensor, verified: torch.Tensor, accepted: torch.Tensor,
            grid: torch.Tensor | None = None, bins: int = NUM_BINS) -> dict:
    """logits [R, gamma] raw confidence logits; verified/accepted [R]. Returns temperatures and
    per-position ECE before (T = 1) and after, with the number of labelled rows per position."""
    grid = temperature_grid() if grid is None else grid.double()
    logits = logits.double()
    gamma = logits.shape[1]
    y, labelled = prefix_labels(verified, accepted, gamma)
    before = cumulative_confidence(logits)
    temps, ece_before, ece_after, counts = [], [], [], []
    prev = torch.ones(logits.shape[0], dtype=torch.float64)  # prod_{i<k} sigmoid(z_i / T_i*)
    for k in range(gamma):
        rows = labelled[:, k]
        n = int(rows.sum())
        counts.append(n)
        if n == 0:
            temps.append(1.0)
            ece_before.append(None)
            ece_after.append(None)
            prev = prev * torch.sigmoid(logits[:, k])
            continue
        cand = prev[rows][None, :] * torch.sigmoid(logits[rows, k][None, :] / grid[:, None])  # [G, n]
        errors = ece_batched(cand, y[rows, k], bins)
        best = int(errors.argmin())
        t = float(grid[best])
        temps.append(round(t, 6))
        ece_before.append(ece(before[rows, k], y[rows, k], bins))
        ece_after.append(float(errors[best]))
        prev = prev * torch.sigmoid(logits[:, k] / t)
    return {"temperatures": temps, "ece_before": ece_before, "ece_after": ece_after, "counts": counts}


def write_calibration(drafter_dir: str, result: dict, **extra) -> str:
    path = os.path.join(drafter_dir, CALIBRATION_FILE)
    payload = {"method": "sts", "bins": NUM_BINS, "grid": list(GRID), **result, **extra}
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def calibrate(drafter: str, target: str, prompt_files: list[str], temperature: float, *, top_p: float = 1.0,
              top_k: int = 0, max_prompts: int | None = None, subsample: int | None = None, max_tokens: int = 256,
              seed: int = 0, log=print, **engine_kwargs) -> dict:
    """Collect held-out rounds with the engine, fit STS, write ``calibration.json``; returns it."""
    from sparkserve import LLM
    from sparkserve.train.drafter.data import load_prompts
    from sparkserve.train.drafter.rollouts import RoundRecorder, chat_prompt_ids, confidence_tensors, run_prompts

    llm = LLM(target, seed=seed, speculative_config={"method": "dspark", "model": drafter}, **engine_kwargs)
    if getattr(llm.engine.runner.proposer.model, "confidence_head", None) is None:
        raise ValueError(f"{drafter} has no confidence head: only DSpark drafters are calibrated")
    recorder = RoundRecorder(llm)
    convs = load_prompts(prompt_files, max_prompts, subsample, seed)
    prompts = [chat_prompt_ids(llm.tokenizer, turns) for _, turns in convs]
    rounds, _ = run_prompts(llm, recorder, prompts, temperature, max_tokens, seed, top_p, top_k)
    gamma = llm.engine.num_speculative_tokens
    found = confidence_tensors(rounds, gamma)
    if found is None:
        raise ValueError("no verify rounds were recorded: use more or longer prompts")
    verified, accepted, logits = found
    result = fit_sts(logits, verified, accepted)
    path = write_calibration(drafter, result, serving_temperature=temperature, top_p=top_p, top_k=top_k,
                             num_rounds=len(rounds), num_prompts=len(prompts),
                             prompts=[os.path.basename(p) for p in prompt_files])
    log(f"calibrate: {len(rounds)} rounds at T={temperature}; temperatures {result['temperatures']}")
    log(f"calibrate: ECE per position before {_fmt(result['ece_before'])} after {_fmt(result['ece_after'])}")
    log(f"wrote {path}")
    return result


def _fmt(values) -> str:
    return "[" + ", ".join("-" if v is None else f"{v:.4f}" for v in values) + "]"
