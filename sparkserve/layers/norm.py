"""RMSNorm (out = w * x / rms(x)), computed in fp32; native kernel at inference (sparkserve/layers/fused.py)."""
from __future__ import annotations

import torch
from torch import nn

from sparkserve.layers import fused


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.use_native(x, self.weight):
            return torch.ops.sparkserve.layer_rms_norm(x, self.weight, self.eps)
        if x.dtype == torch.float32:
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)
