"""RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w, computed in float32.

`add(x, residual)` is the pre-norm block's residual step: h = x + residual (in x.dtype, as the model
stores its residual stream), returns (norm(h), h). On a GPU (layers/dispatch.py) both run the Triton kernel
(kernels/rmsnorm.py: one pass, the add fused); elsewhere the torch lines below, its twin. Where the
integer-dot GEMV runs (CUDA, decode-sized batches) the kernel also writes the int8 form of its output
for the projection that reads it (rms_norm's `quantize`), one quantize launch fewer per norm.

NOTE: Gemma's HF modules compute x * (1 + w); llama.cpp's converter stores (1 + w) in the GGUF, so
every architecture here uses the stored weight as is (checked against HF in tests/models).
"""

from __future__ import annotations

import torch
from torch import nn

from .dispatch import triton_layers


class RMSNorm(nn.Module):
    # quant types of the QuantLinears that read this norm's output (the model's mark_int8_inputs)
    int8_for: frozenset[str] = frozenset()

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)  # (dim,)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        if triton_layers(x):
            from ..kernels.rmsnorm import rms_norm  # imports Triton: GPU installs only

            if x.dim() == 2:  # NOTE: no view: it would drop what quantize attached
                return rms_norm(x, self.weight, self.eps, quantize=self._quantize(x))
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

            return rms_norm(x, self.weight, self.eps, residual=residual, quantize=self._quantize(x))
        h = x + residual
        return self(h), h

    def _quantize(self, x: torch.Tensor) -> bool:
        """Whether the kernel should also write x's norm as int8: a projection reading it takes the
        integer-dot GEMV at this row count (quant_matmul.int8_wanted)."""
        if not self.int8_for or not x.is_cuda:
            return False
        from ..kernels.quant_matmul import int8_wanted
        from ..kernels.rmsnorm import can_quantize

        return can_quantize(x) and int8_wanted(x.shape[0], x.shape[1], x.dtype, x.device, self.int8_for)
