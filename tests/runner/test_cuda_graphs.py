"""When the runner graphs its steps (``runner/cuda_graphs.build``): never on a CPU unless a capturer is
injected, never with enforce_eager, and not (one log line) with an attention backend that has no
fixed-shape metadata. The replay/padding behaviour itself is tested with the triton backend in
``tests/triton_kernels/test_cuda_graph_runner.py``."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from sparkserve.attention.torch_backend import TorchBackend
from sparkserve.runner.cuda_graphs import GraphSettings, ReplayByCall, buckets_up_to, build, unsupported_reason


def _runner(backend, device="cpu"):
    return SimpleNamespace(backend=backend, device=torch.device(device), gamma=0)


def test_cpu_and_enforce_eager_stay_eager():
    assert build(_runner(TorchBackend()), enforce_eager=False, settings=GraphSettings()) is None
    assert build(_runner(TorchBackend(), "cuda"), enforce_eager=True, settings=GraphSettings()) is None
    assert build(_runner(TorchBackend()), True, GraphSettings(capturer=ReplayByCall())) is None


def test_a_backend_without_graph_metadata_falls_back_with_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="sparkserve.runner"):
        assert build(_runner(TorchBackend()), False, GraphSettings(capturer=ReplayByCall())) is None
    assert [r.getMessage() for r in caplog.records] == [
        ("CUDA graphs off: attention backend 'torch' has no fixed-shape metadata (graph_metadata); every step "
         "runs eagerly")]
    assert unsupported_reason(SimpleNamespace(name="x", graph_metadata=None)) is None


@pytest.mark.parametrize("max_num_seqs,expected", [(1, (1,)), (48, (1, 2, 4, 8, 16, 32, 48)),
                                                   (64, (1, 2, 4, 8, 16, 32, 64))])
def test_buckets_end_at_max_num_seqs(max_num_seqs, expected):
    assert buckets_up_to(max_num_seqs) == expected
