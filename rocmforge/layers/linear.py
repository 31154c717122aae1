"""Linear layers: y = x W^T (+ b), W (out_features, in_features) like the GGUF tensor.

`Linear` is the exact layer: W dequantized to float32 (or the model dtype) at load. The packed CPU
layers hold fewer weight bytes, because a CPU decode step is bound by reading every weight once:

`Int4Linear` holds 4-bit codes c in 0..15 with one (scale, zero) pair per 32-element group,

    W'[n, k] = (c[n, k] - 8) * scale[k // 32, n] + zero[k // 32, n]     (torch's CPU int4 kernel)

One plane (0.625 bytes a weight, W' = W) holds the 4-bit types:
    Q4_0: c = q, scale d, zero 0        Q4_1: c = q, scale d, zero m + 8 d
    Q4_K: c = q, scale d sc_j, zero 8 d sc_j - dmin m_j   (sub-block j of 32)
Two planes (1.25 bytes a weight, W' = [W_0 | W_1] over 2K columns, run on [x, x]) hold the 5- and
8-bit 32-blocks exactly, splitting the code into a high part H' and its low nibble L:
    plane 0: codes H', scale 16 d, zero 0        ->  16 d (H' - 8)
    plane 1: codes L,  scale d,    zero 8 d + off ->  d L + off
    Q8_0: q + 128 = 16 H' + L (so q = 16 (H' - 8) + L), off = 0
    Q5_0: q = 16 h + L, H' = h + 8, off = -16 d       Q5_1: the same, off = m

`BF16Linear` holds any other type as W rounded to bfloat16 (2 bytes a weight).

Both run on bfloat16 activations (AVX512-BF16 where the CPU has it) with float32 accumulation and
return x's dtype. They approximate `Linear`: scales, zeros, x and y are rounded to bfloat16
(relative 2^-9 each); tests/models/test_cpu_fastpath.py bounds what that does to the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..gguf.dequant_k import _scale_min_k4
from ..kernels.quant_layouts import split_planes

INT4_PLANES = {"Q4_0": 1, "Q4_1": 1, "Q4_K": 1, "Q5_0": 2, "Q5_1": 2, "Q8_0": 2}  # quant type -> planes
GROUP = 32  # elements per (scale, zero) pair of the int4 kernel
ROWS = 16  # the int4 kernel's output rows are packed in tiles of 16
_PACK_DTYPE = torch.bfloat16  # activations, scales and outputs of the packed layers


def int4_fits(out_features: int, in_features: int) -> bool:
    """Whether torch's int4 kernel takes this shape (it packs rows in 16s, columns in groups of 32)."""
    return out_features % ROWS == 0 and in_features % GROUP == 0


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)  # (out, in)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out)
        return F.linear(x, self.weight, self.bias)


class Int4Linear(nn.Module):
    """W held as int4 codes + per-32 (scale, zero), in one or two planes (module docstring)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                 bias: torch.Tensor | None = None, *, planes: int = 1):  # fmt: skip
        """codes (out, planes * in) integers in 0..15; scale, zero (out, planes * in / 32) float32;
        bias (out,) float32 or None."""
        super().__init__()
        self.out_features, width = codes.shape
        self.in_features, self.planes = width // planes, planes
        want = (self.out_features, width // GROUP)
        if not int4_fits(self.out_features, width // planes) or width % planes or scale.shape != want \
                or zero.shape != want:  # fmt: skip
            raise ValueError(
                f"int4 weight {tuple(codes.shape)} needs out a multiple of {ROWS}, {planes} "
                f"planes of a multiple of {GROUP} columns and (out, cols / {GROUP}) scales, "
                f"got scales {tuple(scale.shape)}"
            )
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
        self.register_buffer("packed", packed)  # (out, planes * in / 2) uint8, the kernel's layout
        sz = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous()  # (planes * in / 32, out, 2)
        self.register_buffer("scale_zero", sz.to(_PACK_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.float())  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out) in x.dtype
        xb = x.to(_PACK_DTYPE)
        if self.planes == 2:
            xb = torch.cat((xb, xb), dim=-1)  # (T, 2 in): plane 0 and plane 1 see the same x
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, self.packed, GROUP, self.scale_zero).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> torch.Tensor:  # (out, in) float32: the W the kernel multiplies by
        eye = torch.eye(self.in_features, dtype=_PACK_DTYPE).repeat(1, self.planes)  # (in, planes * in)
        w = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, GROUP, self.scale_zero)  # (in, out)
        return w.float().t()

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int4 x {self.planes} plane(s), group {GROUP}"


class BF16Linear(nn.Module):
    """W rounded to bfloat16; y = x W^T (+ b) with bfloat16 inputs, returned in x.dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):  # (out, in), (out,)
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.to(_PACK_DTYPE).contiguous())  # (out, in)
        self.register_buffer("bias", None if bias is None else bias.float())  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out) in x.dtype
        y = F.linear(x.to(_PACK_DTYPE), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> torch.Tensor:  # (out, in) float32
        return self.weight.float()


def _nibbles(q: torch.Tensor, lane: int) -> torch.Tensor:
    """(N, k / 2) bytes whose low nibbles are runs of `lane` elements, high nibbles the next run ->
    (N, k) codes: element c*2L + r*L + l is nibble r of byte c*L + l (ggml's order)."""
    n = q.shape[0]
    q = q.view(n, -1, lane)
    return torch.stack((q & 15, q >> 4), dim=2).reshape(n, -1)


def int4_parts(raw: torch.Tensor, qtype: str, n_out: int, k: int):
    """Raw GGUF bytes (n_out, row bytes) uint8 of a type in INT4_PLANES -> (codes (n_out, P k) uint8,
    scale, zero (n_out, P k / 32) float32), P = INT4_PLANES[qtype], laid out as the module docstring."""
    p = split_planes(raw, qtype, n_out, k)
    d = p.d.float()  # (N, k / BS)
    if qtype == "Q4_0":
        return _nibbles(p.q, 16), d, torch.zeros_like(d)
    if qtype == "Q4_1":
        return _nibbles(p.q, 16), d, p.m.float() + 8 * d
    if qtype == "Q4_K":  # 8 sub-blocks of 32 per 256-block: w = d sc_j q - dmin m_j
        sc, mn = _scale_min_k4(raw.reshape(-1, 144))  # (N * k / 256, 8) each, from bytes 4..16
        scale = (d.reshape(-1, 1) * sc).reshape(n_out, -1)  # (N, k / 32)
        zero = 8 * scale - (p.m.float().reshape(-1, 1) * mn).reshape(n_out, -1)
        return _nibbles(p.q, 32), scale, zero
    if qtype == "Q8_0":
        u = (p.q.view(torch.int8).to(torch.int32) + 128).to(torch.uint8)  # (N, k) in 0..255
        hi, lo, off = u >> 4, u & 15, torch.zeros_like(d)
    else:  # Q5_0 / Q5_1: bit j of the block's qh word is element j's fifth bit
        bits = (p.h[:, :, None] >> torch.arange(32, dtype=torch.int32)) & 1  # (N, k / 32, 32)
        hi, lo = bits.reshape(n_out, k).to(torch.uint8) + 8, _nibbles(p.q, 16)
        off = p.m.float() if qtype == "Q5_1" else -16 * d
    codes = torch.cat((hi, lo), dim=1)  # (N, 2k): plane 0, then plane 1
    scale = torch.cat((16 * d, d), dim=1)  # (N, 2k / 32)
    zero = torch.cat((torch.zeros_like(d), 8 * d + off), dim=1)
    return codes, scale, zero


__all__ = ["BF16Linear", "INT4_PLANES", "Int4Linear", "Linear", "int4_fits", "int4_parts"]
