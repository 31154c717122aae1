"""Activations to int8 for the integer-dot GEMV (quant_gemv_i8.py): x (M, K) -> xq, xd, xs.

Per 32-element group g of a row (llama.cpp's Q8_1 idea, computed here from the definition):

    xd[g] = max_i |x_i| / 127                 (fp32; 0 for an all-zero group)
    xq_i  = rint(x_i · (127 / max |x|))       int8 in [-127, 127], ties to even
    xs[h] = xd[g] · Σ_{i in h} xq_i           per 16-element half h of the group (fp32)

so xd[g]·xq_i is the value the GEMV multiplies, and xs is that value's sum (what a weight format's
offset or min multiplies). rint is (v + 1.5·2^23) − 1.5·2^23, exact round-half-even for |v| < 2^22, and
127 / amax is an IEEE (round-to-nearest) division: the torch twin (`quantize_act_ref`) is bit-exact.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch

XGROUP = 32  # elements per xd scale
_RINT = tl.constexpr(12582912.0)  # 1.5 * 2^23


@triton.jit
def _div(a, b, DIV_RN: tl.constexpr):
    """a / b rounded to nearest. NOTE: a GPU's plain fp32 `/` is approximate (div.full), so it uses
    div_rn; the interpreter's div_rn is off by an ulp at times while its `/` is numpy's IEEE one."""
    if DIV_RN:
        return tl.math.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _quantize_groups(x, DIV_RN: tl.constexpr):
    """x (G, 32) fp32 groups -> q (G, 32) fp32 integer values in [-127, 127], d (G,) scales and
    hs (G, 2) the halves' sums d·Σq (the module docstring's xq, xd, xs)."""
    amax = tl.max(tl.abs(x), axis=1)  # (G,)
    safe = tl.where(amax > 0, amax, 1.0)
    inv = tl.where(amax > 0, _div(tl.full(amax.shape, 127.0, tl.float32), safe, DIV_RN), 0.0)
    v = x * inv[:, None]
    q = tl.minimum(tl.maximum((v + _RINT) - _RINT, -127.0), 127.0)
    d = _div(amax, tl.full(amax.shape, 127.0, tl.float32), DIV_RN)
    halves = tl.sum(tl.reshape(q, (q.shape[0], 2, 16)), axis=2)  # (G, 2) exact integer sums
    return q, d, d[:, None] * halves


@triton.jit
def store_groups(x, offs_g, K, row, xq_ptr, xd_ptr, xs_ptr, DIV_RN: tl.constexpr):
    """Quantize x (G, 32) fp32, groups offs_g (G,) of row `row` of a (M, K) activation, into xq / xd /
    xs (groups at or past K / 32 are not stored)."""
    q, d, hs = _quantize_groups(x, DIV_RN)
    mask_g = offs_g < K // 32
    r = row.to(tl.int64)
    tl.store(xq_ptr + r * K + offs_g[:, None] * 32 + tl.arange(0, 32)[None, :], q.to(tl.int8),
             mask=mask_g[:, None])
    tl.store(xd_ptr + r * (K // 32) + offs_g, d, mask=mask_g)
    tl.store(xs_ptr + r * (K // 16) + offs_g[:, None] * 2 + tl.arange(0, 2)[None, :], hs,
             mask=mask_g[:, None])


@triton.jit
def _quantize_act_kernel(x_ptr, xq_ptr, xd_ptr, xs_ptr, K, stride_xm, BG: tl.constexpr,
                         DIV_RN: tl.constexpr):
    """Program (m, j): groups [j·BG, +BG) of row m (K a multiple of 32)."""
    m = tl.program_id(0)
    offs_g = tl.program_id(1) * BG + tl.arange(0, BG)  # (BG,) group
    mask_g = offs_g < K // 32
    offs_k = offs_g[:, None] * 32 + tl.arange(0, 32)[None, :]  # (BG, 32)
    x = tl.load(x_ptr + m * stride_xm + offs_k, mask=mask_g[:, None], other=0.0).to(tl.float32)
    store_groups(x, offs_g, K, m, xq_ptr, xd_ptr, xs_ptr, DIV_RN)


def act_config(arch: Arch) -> dict:
    return dict(BG=32, num_warps=4)


def aot_specs(arch: Arch) -> list[dict]:
    c = act_config(arch)
    return [dict(name=f"quantize_act_{tt[1:]}", fn=_quantize_act_kernel,
                 signature={"x_ptr": tt, "xq_ptr": "*i8", "xd_ptr": "*fp32", "xs_ptr": "*fp32",
                            "K": "i32", "stride_xm": "i32", "BG": "constexpr", "DIV_RN": "constexpr"},
                 constexprs=dict(BG=c["BG"], DIV_RN=True), num_warps=c["num_warps"], num_stages=1)
            for tt in ("*fp16", "*bf16")]


def empty_quantized(m: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Buffers of quantize_act's result for (M, K): xq (M, K) int8, xd (M, K/32), xs (M, K/16) fp32."""
    return (torch.empty(m, k, dtype=torch.int8, device=device),
            torch.empty(m, k // 32, dtype=torch.float32, device=device),
            torch.empty(m, k // 16, dtype=torch.float32, device=device))


def attach(y: torch.Tensor, xqds: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mark y (M, K) as already quantized (a kernel that wrote y wrote xqds = quantize_act(y) too), so
    the integer-dot GEMV that reads y next skips its own quantize_act launch (quant_matmul's `xq8`).
    Valid for this tensor object only, as long as y is not written again."""
    y.rf_quantized = xqds
    return y


def attached(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """What attach() put on x, or None."""
    return getattr(x, "rf_quantized", None)


def quantize_act(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) fp16/bf16/fp32, K % 32 == 0 -> xq (M, K) int8, xd (M, K/32) fp32, xs (M, K/16) fp32."""
    if x.dim() != 2 or x.shape[1] % XGROUP or x.stride(1) != 1:
        raise ValueError(f"quantize_act: x must be a row-contiguous (M, K) tensor with K % 32 == 0, "
                         f"got {tuple(x.shape)} strides {x.stride()}")
    m, k = x.shape
    xq, xd, xs = empty_quantized(m, k, x.device)
    c = act_config(current_arch(x.device))
    _quantize_act_kernel[(m, triton.cdiv(k // 32, c["BG"]))](
        x, xq, xd, xs, k, x.stride(0), BG=c["BG"], DIV_RN=x.device.type != "cpu", num_warps=c["num_warps"],
        enable_fp_fusion=False)  # NOTE: x·inv + 1.5·2^23 fused into an FMA would round x·inv once less
    return xq, xd, xs
