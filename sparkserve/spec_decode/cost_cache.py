"""Where cost tables live on disk and what each is valid for.

``CostKey`` names the setup a table was measured on (model, drafter, dtype, backend, hardware, token
budget); one JSON file per key in ``cache_dir()`` (``$SPARKSERVE_CACHE_DIR/cost`` or
``~/.cache/sparkserve/cost``), named by a hash of the key, the key stored inside and checked on load.
``read_cached`` never fails: a missing, unreadable, foreign or outdated file means "no table" (the
engine then profiles afresh), with one log line saying which and why.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable, TypeVar

log = logging.getLogger("sparkserve.spec_decode.cost_model")

T = TypeVar("T")


class OutdatedFormat(ValueError):
    """A cost table file written in another format version (e.g. a B-only table by an older build)."""


@dataclass(frozen=True)
class CostKey:
    """What a measured table is valid for. Any field change means a different file on disk."""

    model: str
    drafter: str
    dtype: str
    backend: str
    hardware: str
    token_budget: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def filename(self) -> str:
        return f"cost-{self.digest()}.json"


def cache_dir(root: str | None = None) -> str:
    """Where cost tables live: ``root/cost``, root = ``root`` or $SPARKSERVE_CACHE_DIR or ~/.cache/sparkserve."""
    root = root or os.environ.get("SPARKSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                           "sparkserve")
    return os.path.join(root, "cost")


def describe_hardware(device=None) -> str:
    """A stable string naming the machine a table was measured on (GPU name + CUDA, or CPU + threads)."""
    import platform

    import torch

    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return f"cuda:{torch.cuda.get_device_name(index)}:cuda{torch.version.cuda}:torch{torch.__version__}"
    return (f"cpu:{platform.machine()}:{platform.processor() or 'unknown'}:{os.cpu_count()}cores:"
            f"{torch.get_num_threads()}threads:torch{torch.__version__}")


def write_json(data: dict, path: str) -> str:
    """Write ``data`` to ``path`` atomically (temp file + rename); returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cost-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_cached(load: Callable[[str], T], key: CostKey, root: str | None = None) -> T | None:
    """``load(path)`` of the file for ``key``; None if absent, unreadable, outdated or for another key."""
    path = os.path.join(cache_dir(root), key.filename())
    if not os.path.exists(path):
        return None
    try:
        table = load(path)
    except OutdatedFormat as e:
        log.info("ignoring cost table %s: %s; profiling afresh", path, e)
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable cost table %s: %s", path, e)
        return None
    if getattr(table, "key", None) != key:
        log.warning("ignoring cost table %s: it was measured for %s", path, getattr(table, "key", None))
        return None
    return table
