"""The first fused GEMV (v1, 2026-12-02), kept only so bench_quant_matmul.py can time before/after in
one run: a (BN, NG, G) fp32 decode through dequant.dequant_tile, int->float conversions per element.
Not used by the engine."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.dequant import dequant_tile, plane_strides
from rocmforge.kernels.quant_layouts import QuantWeight, group_bytes, qtype_code

GEMV_MAX_M = 16


def gemv_config(qtype: str) -> dict:
    return dict(BN=8, NG=256 // group_bytes(qtype), G=group_bytes(qtype), num_warps=4, num_stages=1)


def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


@triton.jit
def _qgemv_kernel(x_ptr, q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, out_ptr, M, N, n_groups, groups_per_split,
                  stride_xm, stride_om, stride_q, stride_h, stride_d, stride_sc,
                  QTYPE: tl.constexpr, NG: tl.constexpr, G: tl.constexpr, BN: tl.constexpr,
                  BM: tl.constexpr, ATOMIC: tl.constexpr):
    """Program (i, j): rows [i·BN, +BN), groups [j·groups_per_split, +groups_per_split)."""
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    offs_m = tl.arange(0, BM)
    g_lo = tl.program_id(1) * groups_per_split
    g_hi = tl.minimum(g_lo + groups_per_split, n_groups)
    lanes = tl.arange(0, G)[None, :]  # (1, G)
    acc3 = tl.zeros((BN, NG, G), dtype=tl.float32)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for gg0 in range(g_lo, g_hi, NG):
        w0, w1 = dequant_tile(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
                              offs_n, mask_n, gg0, g_hi, QTYPE, NG, G)  # 2 × (BN, NG, G)
        gg = gg0 + tl.arange(0, NG)[:, None]  # (NG, 1)
        k0 = gg * (2 * G) + lanes  # (NG, G) columns of plane 0
        mk = gg < g_hi
        if BM == 1:
            x0 = tl.load(x_ptr + k0, mask=mk, other=0).to(tl.float32)
            x1 = tl.load(x_ptr + k0 + G, mask=mk, other=0).to(tl.float32)
            acc3 += w0 * x0[None, :, :] + w1 * x1[None, :, :]
        else:
            for mi in range(0, M):
                x0 = tl.load(x_ptr + mi * stride_xm + k0, mask=mk, other=0).to(tl.float32)
                x1 = tl.load(x_ptr + mi * stride_xm + k0 + G, mask=mk, other=0).to(tl.float32)
                part = tl.sum(tl.sum(w0 * x0[None, :, :] + w1 * x1[None, :, :], axis=2), axis=1)  # (BN,)
                acc += tl.where(offs_m[:, None] == mi, part[None, :], 0.0)
    if BM == 1:
        acc = tl.sum(tl.sum(acc3, axis=2), axis=1)[None, :]  # (1, BN)
    o = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    mask = (offs_m[:, None] < M) & mask_n[None, :]
    if ATOMIC:
        tl.atomic_add(o, acc, mask=mask)
    else:
        tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=mask)



def qgemv_v1(x: torch.Tensor, w: QuantWeight, split_k: int | None = None,
          config: dict | None = None) -> torch.Tensor:
    """x (M ≤ 16, K) -> (M, N) in x's dtype, through the GEMV kernel (`config` overrides
    gemv_config's BN/NG/num_warps/num_stages, for tuning)."""
    m = x.shape[0]
    assert 1 <= m <= GEMV_MAX_M, f"qgemv handles 1..{GEMV_MAX_M} rows, got {m}"
    c = {**gemv_config(w.qtype), **(config or {})}
    slabs = triton.cdiv(w.n_out, c["BN"])
    steps = triton.cdiv(w.n_groups, c["NG"])
    if split_k is None:  # enough programs for ~2 per SM, never a split shorter than 4 steps
        split_k = max(1, min(triton.cdiv(2 * _num_sms(x.device), slabs), steps // 4))
    per_split = triton.cdiv(steps, split_k) * c["NG"]
    split_k = triton.cdiv(w.n_groups, per_split)
    atomic = split_k > 1
    out = torch.zeros if atomic else torch.empty
    out = out(m, w.n_out, dtype=torch.float32 if atomic else x.dtype, device=x.device)  # (M, N)
    _qgemv_kernel[(slabs, split_k)](
        x, *w.planes(), out, m, w.n_out, w.n_groups, per_split, x.stride(0), out.stride(0), *plane_strides(w),
        QTYPE=qtype_code(w.qtype), NG=c["NG"], G=c["G"], BN=c["BN"], BM=1 if m == 1 else GEMV_MAX_M,
        ATOMIC=atomic, num_warps=c["num_warps"], num_stages=c["num_stages"])
    return out.to(x.dtype) if atomic else out
