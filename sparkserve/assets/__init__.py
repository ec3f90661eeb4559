"""Files shipped inside the package: the embedded demo model and its drafters."""
from __future__ import annotations

import os

ASSETS_DIR = os.path.dirname(os.path.abspath(__file__))
DEMO_MODEL_DIR = os.path.join(ASSETS_DIR, "demo")


def demo_model_path() -> str:
    """Path of the embedded demo target; a clear error if this install lacks it."""
    if not os.path.exists(os.path.join(DEMO_MODEL_DIR, "config.json")):
        raise ValueError(f"the embedded demo model is missing from {DEMO_MODEL_DIR}; build it with "
                         "`sparkserve demo build` or pass --model DIR")
    return DEMO_MODEL_DIR
