"""Attention backend registry. Optional backends are imported only when asked for."""
from __future__ import annotations

import importlib

_BACKENDS = {
    "torch": ("sparkserve.attention.torch_backend", "TorchBackend"),
    "triton": ("sparkserve.attention.triton_backend", "TritonBackend"),
    "flashinfer": ("sparkserve.attention.flashinfer_backend", "FlashInferBackend"),
}


def available_backends() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str, device: str = "cpu"):
    """Return a backend instance; ``auto`` picks torch on CPU."""
    if name == "auto":
        name = "torch"
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose from {available_backends()}")
    module_name, cls_name = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"attention backend {name!r} is not available here: {e}") from e
    return getattr(module, cls_name)()
