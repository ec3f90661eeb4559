"""Attention backend registry: name -> (module, class), imported only when asked for.

A new backend (Triton, FlashInfer, ...) implements ``attention.base.AttentionBackend`` (target steps
and drafting) in its own module and adds one line here.
"""
from __future__ import annotations

import importlib

_BACKENDS = {
    "torch": ("sparkserve.attention.torch_backend", "TorchBackend"),
}


def available_backends() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str, device: str = "cpu"):
    """Return a backend instance; ``auto`` picks torch (the only backend so far, on any device)."""
    if name == "auto":
        name = "torch"
    if name not in _BACKENDS:
        choices = ", ".join(["auto", *available_backends()])
        raise ValueError(f"unknown attention backend {name!r}; available: {choices}")
    module_name, cls_name = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"attention backend {name!r} is not available here: {e}") from e
    return getattr(module, cls_name)()
