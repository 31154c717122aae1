"""RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w, computed in float32.

NOTE: Gemma's HF modules compute x * (1 + w); llama.cpp's converter stores (1 + w) in the GGUF, so
every architecture here uses the stored weight as is (checked against HF in tests/models).
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)  # (dim,)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)
