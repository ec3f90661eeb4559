"""argparse types shared by several commands (torch-free: the API process imports them)."""
from __future__ import annotations

import argparse
import json


def speculative_config_arg(text: str) -> dict:
    """argparse type for ``--speculative-config``: a JSON object that ``SpecConfig`` accepts."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    from sparkserve.config import SpecConfig  # torch-free

    try:
        SpecConfig.from_dict(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid speculative config: {e}") from None
    return value
