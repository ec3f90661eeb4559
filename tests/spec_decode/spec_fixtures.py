"""Shared fixtures for the speculative-decoding engine tests: a 4-layer target and drafters."""
from __future__ import annotations

import os

from tests.models.hf_fixtures import make_hf_model

METHODS = ("ngram", "dspark", "dflash", "eagle3")


def target_dir(root: str) -> str:
    path = os.path.join(root, "target")
    if not os.path.exists(os.path.join(path, "config.json")):
        make_hf_model(path, "qwen3", tied=True, seed=11, layers=4)
    return path


def spec_config(method: str, root: str, gamma: int = 4, **extra) -> dict:
    if method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": gamma, **extra}
    from sparkserve.tools.init_drafter import init_drafter

    path = os.path.join(root, f"drafter-{method}")
    if not os.path.exists(os.path.join(path, "config.json")):
        init_drafter(method, target_dir(root), path, num_speculative_tokens=gamma, seed=3)
    return {"method": method, "model": path, "num_speculative_tokens": gamma, **extra}
