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
from ..kernels.quantize_act import attached
from .linear import Linear


class QuantLinear(nn.Module):
    def __init__(self, weight: QuantWeight, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.qweight, self.dtype = weight, dtype
        self.in_features, self.out_features = weight.k, weight.n_out
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        lead = x.shape[:-1]
        xq8 = attached(x) if x.dtype == self.dtype else None  # x's int8 form, if its norm wrote one
        x2 = x.reshape(-1, self.in_features).to(self.dtype).contiguous()  # (T, in)
        y = quant_matmul(x2, self.qweight, bias=self.bias, xq8=xq8)  # (T, out) in self.dtype
        return y.reshape(*lead, self.out_features)

    def dense_weight(self) -> torch.Tensor:  # (out, in): the exact dequantized weight, for checks
        from ..kernels.dequant import dequantize_planes

        return dequantize_planes(self.qweight, torch.float32)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, qtype={self.qweight.qtype}"


def raw_rows(gguf_file: GGUFFile, name: str, device) -> torch.Tensor:  # (out, row bytes) uint8
    info = gguf_file.tensors[name]
    return torch.from_numpy(gguf_file.raw(name).copy()).to(device).view(info.shape[0], -1)


def fuse_quant_linears(model: nn.Module, gguf_file: GGUFFile, *, dtype: torch.dtype) -> int:
    """Run each row of models/base.FUSIONS (q/k/v, gate/up) as one QuantLinear where its parts share a
    quant type: their GGUF rows stacked (exact: rows are independent blocks), one GEMV instead of 2-3.
    The parts become None. Returns how many fused modules were made."""
    from ..models.base import FUSIONS

    made = 0
    for path, mod in list(model.named_modules()):
        for fused, members in FUSIONS.items():
            if not hasattr(mod, fused) or getattr(mod, fused) is not None:
                continue
            parts = [getattr(mod, m, None) for m in members]
            infos = [gguf_file.tensors.get(f"{path}.{m}.weight") for m in members]
            if any(type(p) is not Linear for p in parts) or any(i is None for i in infos):
                continue
            if len({i.qtype_name for i in infos}) != 1 or infos[0].qtype_name not in QTYPE_NAMES:
                continue
            biases = [p.bias for p in parts]
            if any(b is None for b in biases) and not all(b is None for b in biases):
                continue
            dev = parts[0].weight.device
            raw = torch.cat([raw_rows(gguf_file, i.name, dev) for i in infos])  # (sum out, row bytes)
            n_out, k = raw.shape[0], infos[0].shape[1]
            bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
            setattr(mod, fused, QuantLinear(split_planes(raw, infos[0].qtype_name, n_out, k), bias, dtype))
            for m in members:
                setattr(mod, m, None)
            made += 1
    return made


def quantize_linears(model: nn.Module, gguf_file: GGUFFile, *, dtype: torch.dtype) -> dict[str, int]:
    """Fuse what FUSIONS allows (fuse_quant_linears), then replace each remaining `Linear` named after a
    block-quantized GGUF tensor with a QuantLinear on the weight's device; returns {qtype: count} of
    the GGUF tensors now held quantized (the untied embedding table included). Module paths are
    tensor names. Then the model's `mark_int8_inputs` (if it has one) tells its norms / activations
    which quant types read their outputs (rmsnorm / activations `quantize`)."""
    from ..models.base import FUSIONS

    swapped: dict[str, int] = {}
    fuse_quant_linears(model, gguf_file, dtype=dtype)
    for path, mod in list(model.named_modules()):
        attr = path.rpartition(".")[2]
        if type(mod) is QuantLinear and attr in FUSIONS:  # made by the fusion above
            swapped[mod.qweight.qtype] = swapped.get(mod.qweight.qtype, 0) + len(FUSIONS[attr])
        if type(mod) is not Linear:
            continue
        info = gguf_file.tensors.get(f"{path}.weight")
        if info is None or info.qtype_name not in QTYPE_NAMES:
            continue
        n_out, k = info.shape
        raw = raw_rows(gguf_file, info.name, mod.weight.device)  # (out, row bytes)
        q = QuantLinear(split_planes(raw, info.qtype_name, n_out, k), mod.bias, dtype)
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path) if parent_path else model, attr, q)
        swapped[info.qtype_name] = swapped.get(info.qtype_name, 0) + 1
    from .quant_embedding import quantize_embedding  # NOTE: here, as it imports raw_rows from this module

    emb = quantize_embedding(model, gguf_file, dtype=dtype)  # the untied table
    if emb is not None:
        swapped[emb] = swapped.get(emb, 0) + 1
    if hasattr(model, "mark_int8_inputs"):
        model.mark_int8_inputs()
    return swapped


__all__ = ["QuantLinear", "quantize_linears"]
