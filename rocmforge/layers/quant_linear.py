"""Linear layers whose weight stays GGUF-quantized on the GPU: y = x W^T (+ b), W (out, in) in blocks.

`QuantLinear` holds the weight as `QuantWeight` planes (kernels/quant_layouts.py: an exact load-time
split of the GGUF blocks, no value changes) and runs kernels/quant_matmul.py: the fused dequant-GEMV
for decode-sized batches, the tensor-core GEMM for up to 16 rows, dequant + cuBLAS above (the path is
chosen per call from the row count). `quantize_linears` swaps every `Linear` of a loaded model whose
GGUF tensor has a kernel for its quant type (other types stay dense) and frees the dense weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gguf.reader import GGUFFile
from ..kernels.quant_layouts import QTYPE_NAMES, QuantWeight, split_planes
from ..kernels.quant_matmul import quant_matmul
from .linear import Linear


class QuantLinear(nn.Module):
    def __init__(self, weight: QuantWeight, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.qweight, self.dtype = weight, dtype
        self.in_features, self.out_features = weight.k, weight.n_out
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.dtype).contiguous()  # (T, in)
        y = quant_matmul(x2, self.qweight)  # (T, out) in self.dtype
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def dense_weight(self) -> torch.Tensor:  # (out, in): the exact dequantized weight, for checks
        from ..kernels.dequant import dequantize_planes

        return dequantize_planes(self.qweight, torch.float32)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, qtype={self.qweight.qtype}"


def quantize_linears(model: nn.Module, gguf_file: GGUFFile, *, dtype: torch.dtype) -> dict[str, int]:
    """Replace each `Linear` named after a block-quantized GGUF tensor with a QuantLinear on the
    weight's device; returns {qtype: count} of what was swapped. Module paths are tensor names."""
    swapped: dict[str, int] = {}
    for path, mod in list(model.named_modules()):
        if type(mod) is not Linear:
            continue
        info = gguf_file.tensors.get(f"{path}.weight")
        if info is None or info.qtype_name not in QTYPE_NAMES:
            continue
        dev = mod.weight.device
        n_out, k = info.shape
        raw = torch.from_numpy(gguf_file.raw(info.name).copy()).to(dev).view(n_out, -1)  # (out, row bytes)
        q = QuantLinear(split_planes(raw, info.qtype_name, n_out, k), mod.bias, dtype)
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path) if parent_path else model, attr, q)
        swapped[info.qtype_name] = swapped.get(info.qtype_name, 0) + 1
    return swapped


__all__ = ["QuantLinear", "quantize_linears"]
