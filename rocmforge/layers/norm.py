"""RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w, computed in float32.

`add(x, residual)` is the pre-norm block's residual step: h = x + residual (in x.dtype, as the model
stores its residual stream), returns (norm(h), h). On a GPU (layers/dispatch.py) both run the Triton kernel
(kernels/rmsnorm.py: one pass, the add fused); elsewhere the torch lines below, its twin.

NOTE: Gemma's HF modules compute x * (1 + w); llama.cpp's converter stores (1 + w) in the GGUF, so
every architecture here uses the stored weight as is (checked against HF in tests/models).
"""

from __future__ import annotations

import torch
from torch import nn

from .dispatch import triton_layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)  # (dim,)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        if triton_layers(x):
            from ..kernels.rmsnorm import rms_norm  # imports Triton: GPU installs only

            return rms_norm(x.reshape(-1, x.shape[-1]), self.weight, self.eps).view(x.shape)
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def add(self, x: torch.Tensor, residual: torch.Tensor | None):  # (T, dim), (T, dim) | None
        """-> (norm(x + residual), x + residual); with no residual yet, (norm(x), x)."""
        if residual is None:
            return self(x), x
        if triton_layers(x):
            from ..kernels.rmsnorm import rms_norm

            return rms_norm(x, self.weight, self.eps, residual=residual)
        h = x + residual
        return self(h), h
