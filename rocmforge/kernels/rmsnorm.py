"""RMSNorm, optionally fused with the residual add before it.

    h = x (+ residual)                      rounded to x.dtype, as the unfused model would store it
    y = h / sqrt(mean_j h_j^2 + eps) * w'   w' = w, or 1 + w for Gemma (add_unit_offset)

With a residual the kernel returns (y, h): h is the next layer's residual stream, so the add costs no
extra pass. One program per row; rows up to MAX_FUSED elements stay in registers (one read of x), wider
rows take a two-pass loop (sum of squares, then scale). fp32 math; outputs in x.dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch

MAX_FUSED = 16384


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, h_ptr, eps,
    stride_x, stride_r, stride_y, stride_h,
    N: tl.constexpr, BLOCK: tl.constexpr, ONE_TILE: tl.constexpr,
    HAS_RES: tl.constexpr, UNIT_OFFSET: tl.constexpr,
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
        tl.store(y_ptr + row * stride_y + offs, (hf * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)
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


def norm_config(arch: Arch, n: int) -> dict:
    """One tile up to MAX_FUSED; ~16 fp32 values per thread (wave64 halves the warps)."""
    block = min(triton.next_power_of_2(n), MAX_FUSED)
    threads = max(arch.warp_size, min(1024, block // 16))
    return dict(BLOCK=block, ONE_TILE=n <= MAX_FUSED, num_warps=max(1, threads // arch.warp_size))


def rms_norm(
    x: torch.Tensor,  # (T, N)
    weight: torch.Tensor,  # (N,)
    eps: float,
    *,
    residual: torch.Tensor | None = None,  # (T, N): y = norm(x + residual), also returns x + residual
    add_unit_offset: bool = False,
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
    if T > 0:
        cfg = norm_config(current_arch(x.device), N)
        res = residual if residual is not None else x
        _rms_norm_kernel[(T,)](
            x, res, weight, y, h, float(eps),
            x.stride(0), res.stride(0), y.stride(0), h.stride(0),
            N=N, BLOCK=cfg["BLOCK"], ONE_TILE=cfg["ONE_TILE"],
            HAS_RES=residual is not None, UNIT_OFFSET=add_unit_offset, num_warps=cfg["num_warps"],
        )
    return y if residual is None else (y, h)


def aot_specs(arch: Arch) -> list[dict]:
    """bf16/fp16 activations with fp32 weights; the hidden sizes of the shipped models and 16384."""
    specs = []
    for dt in ("bf16", "fp16"):
        for n in (576, 896, 1152, 1536, 2048, 4096, 8192, 16384):
            for has_res in (False, True):
                cfg = norm_config(arch, n)
                sig = {"x_ptr": f"*{dt}", "res_ptr": f"*{dt}", "w_ptr": "*fp32", "y_ptr": f"*{dt}",
                       "h_ptr": f"*{dt}", "eps": "fp32"}
                sig.update({s: "i32" for s in ("stride_x", "stride_r", "stride_y", "stride_h")})
                const = dict(N=n, BLOCK=cfg["BLOCK"], ONE_TILE=cfg["ONE_TILE"], HAS_RES=has_res,
                             UNIT_OFFSET=False)
                sig.update({s: "constexpr" for s in const})
                specs.append(dict(name=f"rms_norm_{dt}_{n}{'_res' if has_res else ''}", fn=_rms_norm_kernel,
                                  signature=sig, constexprs=const, num_warps=cfg["num_warps"], num_stages=1))
    return specs
