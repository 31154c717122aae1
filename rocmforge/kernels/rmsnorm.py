"""RMSNorm, optionally fused with the residual add before it.

    h = x (+ residual)                      rounded to x.dtype, as the unfused model would store it
    y = h / sqrt(mean_j h_j^2 + eps) * w'   w' = w, or 1 + w for Gemma (add_unit_offset)

With a residual the kernel returns (y, h): h is the next layer's residual stream, so the add costs no
extra pass. One program per row; rows up to MAX_FUSED elements stay in registers (one read of x), wider
rows take a two-pass loop (sum of squares, then scale). fp32 math; outputs in x.dtype.

`quantize=True` (one-tile rows, N % 32 == 0) also writes quantize_act(y) (int8 per 32, from y as
stored) and attaches it to y (quantize_act.attach): the integer-dot GEMV that reads y next skips its
own quantize launch, one kernel fewer per norm in a decode step. Bit-exact with quantize_act(y).
NOTE: launched without FMA contraction (enable_fp_fusion=False), which the quantizer's rounding needs;
the norm's own math is then the same whether it quantizes or not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch
from rocmforge.kernels.quantize_act import XGROUP, attach, empty_quantized, store_groups

MAX_FUSED = 16384
MAX_QUANT = 8192  # quantize=True rows: at 16384 the quantizer's tile spills on sm90 / sm80 (AOT check)


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, h_ptr, xq_ptr, xd_ptr, xs_ptr, eps,
    stride_x, stride_r, stride_y, stride_h,
    N: tl.constexpr, BLOCK: tl.constexpr, ONE_TILE: tl.constexpr,
    HAS_RES: tl.constexpr, UNIT_OFFSET: tl.constexpr, QUANT: tl.constexpr, DIV_RN: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    if ONE_TILE:
        mask = offs < N
        h = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
        if HAS_RES:
            r = tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0)
            h = (h.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
            tl.store(h_ptr + row * stride_h + offs, h, mask=mask)
        hf = h.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(hf * hf, 0) / N + eps)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if UNIT_OFFSET:
            w = w + 1.0
        y = (hf * rstd * w).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + row * stride_y + offs, y, mask=mask)
        if QUANT:  # y as stored -> int8 groups of 32 (masked lanes are 0: whole groups past N)
            G: tl.constexpr = BLOCK // 32
            store_groups(tl.reshape(y.to(tl.float32), (G, 32)), tl.arange(0, G), N, row, xq_ptr, xd_ptr,
                         xs_ptr, DIV_RN)
    else:
        sq = tl.zeros([BLOCK], tl.float32)
        for n0 in range(0, N, BLOCK):
            mask = n0 + offs < N
            h = tl.load(x_ptr + row * stride_x + n0 + offs, mask=mask, other=0.0)
            if HAS_RES:
                r = tl.load(res_ptr + row * stride_r + n0 + offs, mask=mask, other=0.0)
                h = (h.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
                tl.store(h_ptr + row * stride_h + n0 + offs, h, mask=mask)
            hf = h.to(tl.float32)
            sq += hf * hf
        rstd = 1.0 / tl.sqrt(tl.sum(sq, 0) / N + eps)
        tl.debug_barrier()  # NOTE: pass 2 re-reads the h written by pass 1
        src = h_ptr + row * stride_h if HAS_RES else x_ptr + row * stride_x
        for n0 in range(0, N, BLOCK):
            mask = n0 + offs < N
            hf = tl.load(src + n0 + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + n0 + offs, mask=mask, other=0.0).to(tl.float32)
            if UNIT_OFFSET:
                w = w + 1.0
            y = (hf * rstd * w).to(y_ptr.dtype.element_ty)
            tl.store(y_ptr + row * stride_y + n0 + offs, y, mask=mask)


def norm_config(arch: Arch, n: int, quant: bool = False) -> dict:
    """One tile up to MAX_FUSED; ~16 fp32 values per thread (wave64 halves the warps); 8 when it
    quantizes too (16 spilled 8 B at N=2048 on sm80)."""
    block = min(triton.next_power_of_2(n), MAX_FUSED)
    threads = max(arch.warp_size, min(1024, block // (8 if quant else 16)))
    return dict(BLOCK=block, ONE_TILE=n <= MAX_FUSED, num_warps=max(1, threads // arch.warp_size))


def rms_norm(
    x: torch.Tensor,  # (T, N)
    weight: torch.Tensor,  # (N,)
    eps: float,
    *,
    residual: torch.Tensor | None = None,  # (T, N): y = norm(x + residual), also returns x + residual
    add_unit_offset: bool = False,
    quantize: bool = False,  # also quantize_act(y), attached to y (see the module docstring)
):  # -> y (T, N), or (y, h) with a residual
    """RMSNorm of each row (see the module docstring); x.dtype in, x.dtype out."""
    T, N = x.shape
    assert weight.shape == (N,), f"weight {tuple(weight.shape)} does not match rows of {N}"
    assert x.dtype in (torch.float16, torch.bfloat16, torch.float32), x.dtype
    assert x.stride(1) == 1 and weight.stride(0) == 1
    if residual is not None:
        assert residual.shape == x.shape and residual.stride(1) == 1, "residual must be (T, N) like x"
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else y
    if quantize and not can_quantize(x):
        raise ValueError(f"rms_norm: quantize needs fp16/bf16 rows of N % 32 == 0 and <= {MAX_QUANT}, "
                         f"got {tuple(x.shape)} {x.dtype}")
    xq, xd, xs = empty_quantized(T, N, x.device) if quantize else (y, y, y)
    if T > 0:
        cfg = norm_config(current_arch(x.device), N, quantize)
        res = residual if residual is not None else x
        _rms_norm_kernel[(T,)](
            x, res, weight, y, h, xq, xd, xs, float(eps),
            x.stride(0), res.stride(0), y.stride(0), h.stride(0),
            N=N, BLOCK=cfg["BLOCK"], ONE_TILE=cfg["ONE_TILE"],
            HAS_RES=residual is not None, UNIT_OFFSET=add_unit_offset, QUANT=quantize,
            DIV_RN=x.device.type != "cpu", num_warps=cfg["num_warps"], enable_fp_fusion=False,
        )
    if quantize:
        attach(y, (xq, xd, xs))
    return y if residual is None else (y, h)


def can_quantize(x: torch.Tensor) -> bool:
    """rms_norm(x, quantize=True) takes x (T, N)."""
    n = x.shape[-1]
    return x.dtype in (torch.float16, torch.bfloat16) and n % XGROUP == 0 and n <= MAX_QUANT


def aot_specs(arch: Arch) -> list[dict]:
    """bf16/fp16 activations with fp32 weights; the hidden sizes of the shipped models and 16384; the
    quantizing variant where the integer-dot GEMV runs (CUDA)."""
    from rocmforge.kernels.quant_gemv_i8 import supported

    variants = [(False, False), (True, False)] + ([(False, True), (True, True)] if supported(arch) else [])
    specs = []
    for dt in ("bf16", "fp16"):
        for n in (576, 896, 1152, 1536, 2048, 4096, 8192, 16384):
            for has_res, quant in variants:
                if quant and n > MAX_QUANT:
                    continue
                cfg = norm_config(arch, n, quant)
                sig = {"x_ptr": f"*{dt}", "res_ptr": f"*{dt}", "w_ptr": "*fp32", "y_ptr": f"*{dt}",
                       "h_ptr": f"*{dt}", "xq_ptr": "*i8", "xd_ptr": "*fp32", "xs_ptr": "*fp32",
                       "eps": "fp32"}
                sig.update({s: "i32" for s in ("stride_x", "stride_r", "stride_y", "stride_h")})
                const = dict(N=n, BLOCK=cfg["BLOCK"], ONE_TILE=cfg["ONE_TILE"], HAS_RES=has_res,
                             UNIT_OFFSET=False, QUANT=quant, DIV_RN=True)
                sig.update({s: "constexpr" for s in const})
                name = f"rms_norm_{dt}_{n}{'_res' if has_res else ''}{'_q8' if quant else ''}"
                specs.append(dict(name=name, fn=_rms_norm_kernel, signature=sig, constexprs=const,
                                  num_warps=cfg["num_warps"], num_stages=1))
    return specs
