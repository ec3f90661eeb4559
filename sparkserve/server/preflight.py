"""Everything ``sparkserve launch`` can check before it binds the port (torch-free, about a millisecond).

A configuration error is one line on stderr and exit code 2, before the HTTP server starts and before
the engine core loads anything: a missing or broken model or drafter directory, a hub id where a local
directory is needed, a tokenizer path without a tokenizer, engine limits the config tree refuses. What
needs the model loaded (weights' shapes, a drafter that does not match the target) is still the engine
core's to find; it says so once and the server exits 1.
"""
from __future__ import annotations

import json
import os
import re

from sparkserve.server.settings import ServerSettings, has_tokenizer

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name", as the Hugging Face Hub spells ids
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
DRAFTER_METHODS = ("dspark", "dflash", "eagle3")  # the methods that load a checkpoint directory


def _missing_dir(what: str, path: str) -> str:
    if _HUB_ID.match(path) and not os.path.exists(path):
        return (f"{what} {path!r} is not a local directory. sparkserve does not download weights at run time; "
                f"fetch them first, e.g. `huggingface-cli download {path} --local-dir DIR` (or `git clone "
                f"https://huggingface.co/{path} DIR`), then pass DIR")
    return f"{what} {path!r} is not a directory"


def _config_json(directory: str, what: str) -> dict:
    file = os.path.join(directory, "config.json")
    if not os.path.exists(file):
        raise ValueError(f"no config.json in the {what} {directory!r}: not a Hugging Face model directory")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    return raw


def check_model_dir(path: str, flag: str = "--model") -> None:
    if not os.path.isdir(path):
        raise ValueError(_missing_dir(flag, path))
    _config_json(path, "model directory")
    if not any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES):
        raise ValueError(f"{flag} {path!r} has no {' or '.join(WEIGHT_FILES)} (weights are read from "
                         "safetensors only)")


def check_drafter(spec: dict | None) -> None:
    """The drafter directory of a ``--speculative-config``, named as the drafter's."""
    if not spec or spec.get("method") not in DRAFTER_METHODS:
        return
    path = spec.get("model")
    if not path:
        raise ValueError(f"--speculative-config: method {spec['method']!r} needs the drafter directory in "
                         "\"model\"")
    if not os.path.isdir(path):
        raise ValueError(_missing_dir("--speculative-config: the drafter directory", path))
    _config_json(path, "drafter directory")
    if not any(os.path.exists(os.path.join(path, f)) for f in WEIGHT_FILES):
        raise ValueError(f"--speculative-config: the drafter directory {path!r} has no model.safetensors")


def preflight(settings: ServerSettings) -> None:
    """ValueError with one message for the first configuration problem found, else None."""
    check_model_dir(settings.model_path)
    if settings.tokenizer is not None and not has_tokenizer(settings.tokenizer):
        raise ValueError(f"--tokenizer {settings.tokenizer!r} has no tokenizer.json or tokenizer.model")
    check_drafter(settings.engine_kwargs.get("speculative_config"))
    from sparkserve.engine.args import build_engine_config  # torch-free

    try:
        config = build_engine_config(**settings.engine_kwargs)
    except (TypeError, KeyError) as e:  # a config.json whose fields have the wrong types
        raise ValueError(f"{os.path.join(settings.model_path, 'config.json')}: {e}") from None
    limit = _config_json(settings.model_path, "model directory").get("max_position_embeddings")
    if isinstance(limit, int) and config.scheduler.max_model_len > limit:
        raise ValueError(f"--max-model-len {config.scheduler.max_model_len} exceeds the model's "
                         f"max_position_embeddings {limit}")
