"""Files shipped inside the package: the embedded demo model and its drafters."""
from __future__ import annotations

import json
import os

ASSETS_DIR = os.path.dirname(os.path.abspath(__file__))
DEMO_MODEL_DIR = os.path.join(ASSETS_DIR, "demo")


def demo_model_path() -> str:
    """Path of the embedded demo target; a clear error if this install lacks it."""
    if not os.path.exists(os.path.join(DEMO_MODEL_DIR, "config.json")):
        raise ValueError(f"the embedded demo model is missing from {DEMO_MODEL_DIR}; build it with "
                         "`sparkserve demo build` or pass --model DIR")
    return DEMO_MODEL_DIR


DEMO_DRAFTER = "dspark"
# launch default on the demo model, chosen by bench/concurrency_sweep.py (bench/RESULTS.md, issue 7):
# interleaved on this CPU, lagged ran at 0.90-1.04x no speculation over c = 1..64 (mean 0.98), causal
# at 0.74-1.05x (mean 0.96); both 1.4-2.0x the best fixed verify length.
DEMO_VERIFY = "lagged"


def demo_drafter_path(method: str = DEMO_DRAFTER) -> str | None:
    """The shipped drafter of the demo model for ``method``, or None if this install lacks it."""
    path = os.path.join(DEMO_MODEL_DIR, "drafters", method)
    return path if os.path.exists(os.path.join(path, "model.safetensors")) else None


def demo_speculative_config() -> dict | None:
    """What ``sparkserve launch`` with no ``--model`` speculates with: the shipped DSpark drafter and
    the confidence-scheduled planner; None when the drafter is not shipped (then no speculation)."""
    path = demo_drafter_path()
    if path is None:
        return None
    with open(os.path.join(path, "config.json")) as f:
        gamma = int(json.load(f)["block_size"])
    return {"method": DEMO_DRAFTER, "model": path, "num_speculative_tokens": gamma, "verify": DEMO_VERIFY}
