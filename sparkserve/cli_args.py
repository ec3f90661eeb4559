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


def with_default_planner(spec: dict | None) -> dict | None:
    """A user's speculative config with the serving default planner filled in: where a drafter model is
    given and no ``verify`` is, the measured default (``assets.DEMO_VERIFY``, with its draft gate), not
    ``SpecConfig``'s ``fixed`` (which kept drafting where drafting costs more than it earns)."""
    if not spec or spec.get("method") not in ("dspark", "dflash", "eagle3"):  # ngram drafts for free: kept as is
        return spec
    if "verify" in spec or "verify" in (spec.get("extra") or {}):
        return spec
    from sparkserve.assets import DEMO_VERIFY

    return {**spec, "verify": DEMO_VERIFY}
