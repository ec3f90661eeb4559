"""Shared helpers for drafter tests: one tiny target per process, drafter checkpoints, a paged-cache
bookkeeper that hands out scattered block ids, and plain-tensor math for the dense references."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import pytest
import torch

from sparkserve.models.loader import load_model
from sparkserve.tools.init_drafter import init_drafter
from sparkserve.spec_decode.types import ProposeRequest
from sparkserve.step import SamplingMeta
from tests.models.hf_fixtures import make_hf_model

BLOCK = 4
NUM_BLOCKS = 48


@pytest.fixture(scope="module")
def single_thread():
    """These tests run many tiny ops; one intra-op thread avoids OpenMP hand-off costs on a busy
    2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def _workdir() -> str:
    path = tempfile.mkdtemp(prefix="sparkserve-drafter-tests-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def tiny_target() -> str:
    """A 4-layer tied Qwen3 (H=64, V=320) written by transformers' save_pretrained."""
    return make_hf_model(f"{_workdir()}/target", "qwen3", tied=True, layers=4, with_tokenizer=False)


@functools.lru_cache(maxsize=None)
def loaded_target():
    return load_model(tiny_target(), "float32")


@functools.lru_cache(maxsize=None)
def drafter_dir(method: str, head: str = "vanilla", gamma: int = 5, init_std: float = 0.2) -> str:
    return init_drafter(method, tiny_target(), f"{_workdir()}/{method}-{head}-{gamma}-{init_std}",
                        num_speculative_tokens=gamma, markov_head_type=head, seed=1, init_std=init_std)


def perturb_norms(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every 1-d parameter (norm weights, biases) distinct values so a swapped or skipped
    norm shows up in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


class PagedTables:
    """Block tables with scattered, non-contiguous block ids; slots as the runner computes them."""

    def __init__(self, num_blocks: int = NUM_BLOCKS, block_size: int = BLOCK, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.free = torch.randperm(num_blocks - 1, generator=gen).add(1).tolist()  # block 0 stays unused
        self.block_size = block_size
        self.tables: dict[str, list[int]] = {}

    def slots(self, rid: str, positions: range) -> list[int]:
        table = self.tables.setdefault(rid, [])
        while len(table) * self.block_size <= positions[-1]:
            table.append(self.free.pop())
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in positions]


def propose_request(rid, tokens: list[int], tables: PagedTables, temperature: float, seed: int | None,
                    max_draft_tokens: int) -> ProposeRequest:
    """Anchor = tokens[-1] at position len(tokens) - 1."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return ProposeRequest(rid, tokens[-1], len(tokens) - 1, list(tokens), list(tables.tables[rid]),
                          SamplingMeta(temperature=temperature, seed=seed), gen, max_draft_tokens)


# ----------------------------------------------------------------------------------------------
# plain-tensor math for the dense references (deliberately not the package's modules)

def rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    x = x.double()
    return (w.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).float()


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, heads, D] rotate-half RoPE at positions [T]."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = positions.double()[:, None] * inv[None]  # [T, D/2]
    cos, sin = ang.cos()[:, None].float(), ang.sin()[:, None].float()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q, k, v, visible) -> torch.Tensor:
    """q [Q, Hq, D], k/v [K, Hkv, D], visible bool [Q, K] -> [Q, Hq*D] (explicit softmax, GQA)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(q.shape[0], -1)


def mlp(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    lin = torch.nn.functional.linear
    gate = lin(x, sd[prefix + "gate_proj.weight"])
    return lin(torch.nn.functional.silu(gate) * lin(x, sd[prefix + "up_proj.weight"]), sd[prefix + "down_proj.weight"])
