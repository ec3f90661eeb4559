"""Attention backend registry: name -> (module, class), imported only when asked for.

A new backend implements ``attention.base.AttentionBackend`` (target steps and drafting) in its own
module and adds one line here. ``triton`` and ``flashinfer`` need a CUDA device (and their packages:
``pip install -e '.[gpu]'``); asked for elsewhere they raise a clear error (triton also runs under
``TRITON_INTERPRET=1`` on a CPU, for tests). ``auto`` picks ``cpu`` (the native paged
kernels, ``csrc/attention.cpp``) on a CPU device when ``sparkserve.native.available()``, else
``torch``; on a CUDA device it picks ``flashinfer`` when flashinfer and the Triton kernels import (its
drafting runs on the Triton draft kernel), else ``triton`` when the Triton kernels import, else ``torch``
(``choose_auto``: a pure function of the device and what imports). ``SPARKSERVE_ATTENTION_BACKEND=<name>``
makes ``auto`` mean that backend instead (tests and benchmarks run the same code against each backend with it).
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

log = logging.getLogger("sparkserve.attention")

_BACKENDS = {
    "torch": ("sparkserve.attention.torch_backend", "TorchBackend"),
    "cpu": ("sparkserve.attention.cpu_backend", "CpuNativeBackend"),
    "triton": ("sparkserve.attention.triton_backend", "TritonBackend"),
    "flashinfer": ("sparkserve.attention.flashinfer_backend", "FlashInferBackend"),
}
_CUDA_ONLY = ("triton", "flashinfer")  # triton also runs on a CPU under TRITON_INTERPRET=1 (tests)
_announced: set[str] = set()


def available_backends() -> list[str]:
    return list(_BACKENDS)


def resolve(name: str, device: str = "cpu", importable: Callable[[str], bool] | None = None) -> str:
    """The backend name ``get_backend(name, device)`` instantiates; ``auto`` logs its choice once."""
    if name != "auto":
        return name
    forced = os.environ.get("SPARKSERVE_ATTENTION_BACKEND", "").strip()
    if forced and forced != "auto":
        choice, why = forced, "SPARKSERVE_ATTENTION_BACKEND"
    else:
        choice, why = choose_auto(device, importable or module_imports, _native_available)
    if choice not in _announced:
        _announced.add(choice)
        log.info("attention backend auto -> %s (%s)", choice, why)
    return choice


def choose_auto(device: str, importable: Callable[[str], bool],
                native_available: Callable[[], bool]) -> tuple[str, str]:
    """(backend, why) for ``auto`` on ``device`` ("cpu", "cuda", "cuda:1", ...), given which modules
    import (``importable(module_name)``) and whether the native CPU kernels built."""
    if device == "cpu":
        if native_available():
            return "cpu", "native CPU kernels available"
        return "torch", "native CPU kernels unavailable"
    if not device.startswith("cuda"):
        return "torch", "device " + device
    triton_ok = importable("sparkserve_triton.paged_attention")
    if importable("flashinfer") and triton_ok:
        return "flashinfer", "CUDA device; flashinfer and triton import"
    if triton_ok:
        return "triton", "CUDA device; flashinfer does not import, triton does"
    return "torch", "CUDA device; neither flashinfer nor triton imports"


def module_imports(module: str) -> bool:
    """Whether ``import module`` succeeds here (any exception counts as no: a broken install)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a GPU package can fail at import with anything (CUDA libs, JIT)
        return False
    return True


def _native_available() -> bool:
    from sparkserve import native

    return native.available()


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def get_backend(name: str, device: str = "cpu"):
    """Return a backend instance for ``name`` (or ``auto``, see ``resolve``)."""
    name = resolve(name, device)
    if name not in _BACKENDS:
        choices = ", ".join(["auto", *available_backends()])
        raise ValueError(f"unknown attention backend {name!r}; available: {choices}")
    if name == "cpu" and not _native_available():
        raise ValueError("attention backend 'cpu' is not available here: the native CPU kernels are off or did not "
                         "build (see the sparkserve.native log line); use 'torch' or 'auto'")
    if name in _CUDA_ONLY and not device.startswith("cuda") and not (name == "triton" and _triton_interpreted()):
        raise ValueError(f"attention backend {name!r} needs a CUDA device (this engine runs on {device}); "
                         "use 'auto', 'cpu' or 'torch'")
    module_name, cls_name = _BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"attention backend {name!r} is not available here: {e}") from e
    return getattr(module, cls_name)()
