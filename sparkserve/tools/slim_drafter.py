"""Slim drafter checkpoints: DeepSpec key names without the frozen vocabulary tensors.

Offline tool (used by ``sparkserve demo drafters`` to ship the demo drafters); serving reads either
layout through ``spec_decode/checkpoint.py``.
"""
from __future__ import annotations

import os
import shutil

from sparkserve.models.loader import read_state_dict
from sparkserve.spec_decode.checkpoint import CALIBRATION_FILE, FROZEN_VOCAB


def write_slim_drafter(src: str, dst: str) -> list[str]:
    """Copy a DeepSpec-layout drafter to ``dst`` without ``embed_tokens``/``lm_head``: training keeps
    them frozen at the target's values (DSPARK.md §1.6), so ``load_drafter`` re-takes them from the
    target. Saves 2 x vocab x hidden per drafter (most of a small drafter). Returns the files written."""
    from safetensors.torch import save_file

    os.makedirs(dst, exist_ok=True)
    state = {k: v for k, v in read_state_dict(src).items() if k not in FROZEN_VOCAB}
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(dst, "model.safetensors"),
              metadata={"format": "pt", "frozen_vocab": "from_target"})
    written = ["model.safetensors"]
    for name in ("config.json", CALIBRATION_FILE):
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
            written.append(name)
    return written


