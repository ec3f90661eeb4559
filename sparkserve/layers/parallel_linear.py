"""Tensor-parallel linears, built by slicing the layers of a loaded full model (the loader is unchanged).

Megatron's split of a decoder layer over ``world`` ranks, one all-reduce per half-layer:
- **column-parallel** (q/k/v, gate/up): rank r keeps rows [r*out/world, (r+1)*out/world) of the weight
  [out, in]; its output is its share of heads (or of the intermediate units), consumed locally, so no
  communication. The shard is a plain ``nn.Linear``, so ``fuse()`` and the CPU inference linears
  (``StreamLinear``) apply to it unchanged.
- **row-parallel** (o_proj, down_proj): rank r keeps input columns [r*in/world, ...); each rank's product
  is a partial sum of the full output, all-reduced (summed) over the group, then the bias is added once.
- **vocab-parallel lm_head**: rank r scores vocabulary rows [r*V/world, ...); the slices are gathered on
  rank 0 (the only rank that samples) into [N, V] logits.

Every collective runs on the default process group (``sparkserve/distributed/group.py``), whose timeout
bounds how long a rank waits for a dead peer.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _check_divides(size: int, world: int, what: str) -> int:
    if size % world:
        raise ValueError(f"{what} ({size}) is not divisible by tensor_parallel_size {world}")
    return size // world


def column_parallel(linear: nn.Linear, rank: int, world: int) -> nn.Linear:
    """The rank's output rows of ``linear`` [out, in] as a new ``nn.Linear`` [out/world, in]: the
    column-parallel shard (a plain linear: its outputs are consumed on the rank, nothing to communicate)."""
    part = _check_divides(linear.out_features, world, "a column-parallel output size")
    rows = slice(rank * part, (rank + 1) * part)
    weight = linear.weight.detach()[rows].clone()
    out = nn.Linear(weight.shape[1], part, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    out.weight = nn.Parameter(weight, requires_grad=False)
    if linear.bias is not None:
        out.bias = nn.Parameter(linear.bias.detach()[rows].clone(), requires_grad=False)
    return out


class RowParallelLinear(nn.Module):
    """y = all_reduce_sum(x_r @ W_r.T) + bias, x_r [..., in/world] the rank's input columns.

    ``linear`` is the rank's [out, in/world] shard as a plain child module (no bias), so the CPU inference
    linears replace it like any other projection."""

    def __init__(self, full: nn.Linear, rank: int, world: int):
        super().__init__()
        part = _check_divides(full.in_features, world, "a row-parallel input size")
        weight = full.weight.detach()[:, rank * part:(rank + 1) * part].clone()
        self.linear = nn.Linear(part, full.out_features, bias=False, device=weight.device, dtype=weight.dtype)
        self.linear.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if full.bias is None else nn.Parameter(full.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = full.in_features, full.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        dist.all_reduce(y)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class VocabParallelLMHead(nn.Module):
    """logits = hidden @ W.T over the rank's vocabulary slice, gathered on rank 0: [N, V] there, the local
    [N, V/world] slice elsewhere (only rank 0 samples)."""

    def __init__(self, full: nn.Module, rank: int, world: int):
        super().__init__()
        vocab, hidden = full.weight.shape
        part = _check_divides(vocab, world, "vocab_size")
        weight = full.weight.detach()[rank * part:(rank + 1) * part].clone()  # a copy: a tied embedding stays whole
        self.linear = nn.Linear(hidden, part, bias=False, device=weight.device, dtype=weight.dtype)
        self.linear.weight = nn.Parameter(weight, requires_grad=False)
        self.rank, self.world = rank, world

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        local = self.linear(hidden).contiguous()
        if self.rank != 0:
            dist.gather(local, None, dst=0)
            return local
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.gather(local, parts, dst=0)
        return torch.cat(parts, dim=-1)
