"""Triton kernel tests: natively on a CUDA GPU, else in Triton's interpreter on CPU tensors.

``TRITON_INTERPRET=1`` must be set before any kernel is decorated, so it is set here, when pytest
loads this folder and before its test modules import ``sparkserve_triton``. Without triton installed
these tests skip (``pytest.importorskip`` in each module), except in CI (``CI`` set), where triton is part of the ``dev`` extra and its absence
is an install bug that must fail loudly.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401

    TRITON_ERROR = None
except ImportError as e:
    TRITON_ERROR = e
if TRITON_ERROR is not None and os.environ.get("CI"):
    raise ImportError(f"triton is missing in CI: it is in the dev extra (pip install -e '.[dev]'): {TRITON_ERROR}")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device() -> str:
    return DEVICE
