"""Fused GGUF dequant-GEMV for decode: out (M ≤ 8, N) = x (M, K) @ W^T, W (N, K) block-quantized.

    out[m, n] = Σ_v  S_lo[n,v]·Σ_{i∈lo(v)} x[m,i]·(q_i − OFF) + S_hi[n,v]·Σ_{i∈hi(v)} x[m,i]·(q_i − OFF)
                   + B_lo[n,v]·Σ_{i∈lo(v)} x[m,i] + B_hi[n,v]·Σ_{i∈hi(v)} x[m,i]

v runs over the 16-byte *vectors* of the quant plane (quant_layouts.py): each lane holds one vector
of one row as 4 int32 words, so quant loads are 16 bytes wide. A vector's low nibbles ("lo") and
high nibbles ("hi", absent for Q8_0) each share one scale S and one bias B (Q4_0: S=d, B=0;
Q4_1: S=d, B=m; Q4_K: S=d·sc_s, B=−dmin·m_s; Q6_K: S=d·sc_s, ...), so the scale is applied once per
16 products, and the bias only needs Σx, which is shared by every row.

Decode without integer→float conversions (a quarter-rate instruction): a byte lane b < 256 at bit
8t of a word is OR-ed into the mantissa of 2^(23−8t) and the exponent subtracted,

    float_bits((v & (0xFF << 8t)) | (150 − 8t) << 23) − (2^(23−8t) + OFF) = b − OFF     (exact)

so each weight costs one logic op, one add and one FMA. High bits (Q5_*, Q6_K) are merged into the
byte lanes with integer shifts/masks first. Partial sums are kept per (row, vector) in registers;
the one cross-lane reduction happens after the K loop (M = 1). Everything is exact in fp32 except
the FMA accumulation order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch, sm_count
from rocmforge.kernels.arrival import split_counters
from rocmforge.kernels.gemv_decode import decode_vectors
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, QuantWeight, plane_dtypes, qtype_code

GEMV_MAX_M = 8  # rows of x the GEMV kernel takes


@triton.jit
def _lane_dot(x_row, cols, mask, f0, f1, f2, f3):
    """Σ_t f_t · x[cols + t] -> (BN, NW) partial products (cols (NW,) column of lane 0), and Σ_t x."""
    x0 = tl.load(x_row + cols, mask=mask, other=0).to(tl.float32)
    x1 = tl.load(x_row + cols + 1, mask=mask, other=0).to(tl.float32)
    x2 = tl.load(x_row + cols + 2, mask=mask, other=0).to(tl.float32)
    x3 = tl.load(x_row + cols + 3, mask=mask, other=0).to(tl.float32)
    p = f0 * x0[None, :] + f1 * x1[None, :] + f2 * x2[None, :] + f3 * x3[None, :]
    return p, x0 + x1 + x2 + x3


@triton.jit
def _row_contrib(x_row, cols, hi_off, mask_w, lo, hi, s_lo, s_hi, b_lo, b_hi,
                 BN: tl.constexpr, NV: tl.constexpr, HAS_HI: tl.constexpr, HAS_B: tl.constexpr):
    """(BN, NV) contribution of one step for one row of x."""
    p, xs = _lane_dot(x_row, cols, mask_w, lo[0], lo[1], lo[2], lo[3])
    c = s_lo * tl.sum(tl.reshape(p, (BN, NV, 4)), axis=2)
    if HAS_B:
        c += b_lo * tl.sum(tl.reshape(xs, (NV, 4)), axis=1)[None, :]
    if HAS_HI:
        p, xs = _lane_dot(x_row, cols + hi_off, mask_w, hi[0], hi[1], hi[2], hi[3])
        c += s_hi * tl.sum(tl.reshape(p, (BN, NV, 4)), axis=2)
        if HAS_B:
            c += b_hi * tl.sum(tl.reshape(xs, (NV, 4)), axis=1)[None, :]
    return c


@triton.jit
def _qgemv_kernel(x_ptr, q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, out_ptr, part_ptr, cnt_ptr, b_ptr,
                  M, N, n_words, words_per_split,
                  stride_xm, stride_om, stride_q, stride_h, stride_d, stride_sc,
                  QTYPE: tl.constexpr, BN: tl.constexpr, NW: tl.constexpr, BM: tl.constexpr,
                  SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr, ASM: tl.constexpr):
    """Program (i, j): rows [i·BN, +BN), quant words [j·words_per_split, +words_per_split), NW per step.
    q_ptr/h_ptr are the quant / high-bit planes viewed as int32 words. SPLIT (split-K): see
    store_rows (partials in part_ptr, the last split of a row slab writes out)."""
    NV: tl.constexpr = NW // 4
    HAS_HI: tl.constexpr = QTYPE != 8
    HAS_B: tl.constexpr = QTYPE == 3 or QTYPE == 7 or QTYPE == 12 or QTYPE == 13
    HI_OFF: tl.constexpr = 64 if QTYPE == 14 else (32 if QTYPE == 12 or QTYPE == 13 else 16)
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    rows = offs_n.to(tl.int64)[:, None]  # (BN, 1)
    w_lo = tl.program_id(1) * words_per_split
    w_hi = tl.minimum(w_lo + words_per_split, n_words)
    offs_m = tl.arange(0, BM)
    acc = tl.zeros((BN, NV), dtype=tl.float32)  # BM == 1: per-(row, vector) partial sums
    acc_m = tl.zeros((BM, BN), dtype=tl.float32)  # BM > 1: per-step reduced sums
    for w0 in range(w_lo, w_hi, NW):
        u = w0 + tl.arange(0, NW)  # (NW,) word index in the row
        mask_w = u < w_hi
        mask2 = mask_n[:, None] & mask_w[None, :]  # (BN, NW)
        maskv = mask_n[:, None] & ((w0 // 4 + tl.arange(0, NV)) < w_hi // 4)[None, :]  # (BN, NV)
        lo, hi, s_lo, s_hi, b_lo, b_hi, cols = decode_vectors(
            q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
            rows, w0, mask2, maskv, QTYPE, NW, ASM)
        if BM == 1:
            acc += _row_contrib(x_ptr, cols, HI_OFF, mask_w, lo, hi, s_lo, s_hi, b_lo, b_hi,
                                BN, NV, HAS_HI, HAS_B)
        else:
            for mi in tl.static_range(BM):
                c = _row_contrib(x_ptr + mi * stride_xm, cols, HI_OFF, mask_w & (u * 0 + mi < M), lo, hi,
                                 s_lo, s_hi, b_lo, b_hi, BN, NV, HAS_HI, HAS_B)
                acc_m += tl.where(offs_m[:, None] == mi, tl.sum(c, axis=1)[None, :], 0.0)
    if BM == 1:
        acc_m = tl.sum(acc, axis=1)[None, :]  # (1, BN)
    store_rows(acc_m, out_ptr, part_ptr, cnt_ptr, b_ptr, offs_m, offs_n, M, N, stride_om, SPLIT, HAS_BIAS)


@triton.jit
def _write_out(acc_m, out_ptr, b_ptr, offs_m, offs_n, M, N, stride_om, HAS_BIAS: tl.constexpr):
    """out[offs_m, offs_n] = acc_m (+ bias[offs_n]), rounded once to out's dtype."""
    if HAS_BIAS:
        acc_m += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    o = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    tl.store(o, acc_m.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def store_rows(acc_m, out_ptr, part_ptr, cnt_ptr, b_ptr, offs_m, offs_n, M, N, stride_om,
               SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """acc_m (BM, BN) fp32: this program's sums over its K slice -> out[offs_m, offs_n] (+ bias[n]).

    SPLIT: program (i, j) writes its partial to part[j] ((splits, M, N) fp32), then bumps the row
    slab's arrival counter cnt[i] (acq_rel, after a barrier: the whole program's stores come first).
    The program that arrives last sums part[0..splits) in split order (deterministic, whatever the
    arrival order), adds the bias, writes out and resets cnt[i] to 0 for the next launch: split-K
    with no second kernel. cnt is a zeroed buffer of the launcher's (split_counters)."""
    if SPLIT:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        # NOTE: M and N may arrive as Python ints (Triton specializes 1): offsets from program ids
        rows = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]  # (BM, BN) within one partial
        tl.store(part_ptr + (tl.program_id(1) * M).to(tl.int64) * N + rows, acc_m, mask=mask)
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + tl.program_id(0), 1, sem="acq_rel")
        if arrived == tl.num_programs(1) - 1:
            total = tl.zeros_like(acc_m)
            for j in range(0, tl.num_programs(1)):
                # NOTE: .cg reads L2, where the other programs' partials are: never a stale L1 line
                total += tl.load(part_ptr + (j * M).to(tl.int64) * N + rows, mask=mask, other=0.0,
                                 cache_modifier=".cg")
            _write_out(total, out_ptr, b_ptr, offs_m, offs_n, M, N, stride_om, HAS_BIAS)
            tl.store(cnt_ptr + tl.program_id(0), 0)
    else:
        _write_out(acc_m, out_ptr, b_ptr, offs_m, offs_n, M, N, stride_om, HAS_BIAS)


# ---------------------------------------------------------------- per-arch configs
_DTYPES = {torch.float16: "*fp16", torch.bfloat16: "*bf16"}
_SC_WORDS = ("Q4_K", "Q5_K")  # their packed 6-bit scales are read as 3 int32 words per superblock


def gemv_config(arch: Arch, qtype: str, bm: int = 1) -> dict:
    """BN rows × NW int32 words (4 per lane = 16 bytes) per step for BM rows of x
    (measurements: notes_quant_matmul.md)."""
    if arch.backend == "cuda" and bm == 1:
        # H200 sweep, Q4_K M=1 (benchmarks/results/quant_matmul_h200.md): BN=16 rows with 2 warps reached
        # 1380 GB/s on 14336x4096 against 782 for BN=32 / 4 warps (twice the programs in flight)
        return dict(BN=16, NW=64, num_warps=2, num_stages=1)
    if arch.backend == "cuda":  # NOTE: 4 rows per lane × BM rows of x run out of registers (255, spills)
        # NOTE: Q4_K at BM=8 kept 8 B of stack with 4 warps on sm90 (AOT); 8 warps: 78 regs, clean
        return dict(BN=16, NW=32, num_warps=8 if qtype == "Q4_K" and bm > 4 else 4, num_stages=1)
    # NOTE: BN=16, NW=64 spills SGPRs for Q6_K at BM=8 on gfx942/gfx90a (AOT check)
    return dict(BN=16, NW=32, num_warps=4, num_stages=1)


def _bm(m: int) -> int:
    return 1 if m == 1 else triton.next_power_of_2(m)


def _signature(qtype: str, x_tt: str) -> dict:
    planes = {**plane_dtypes(qtype), "q_ptr": "*i32", "h_ptr": "*i32"}
    if qtype in _SC_WORDS:
        planes["sc_ptr"] = "*i32"
    sig = {"x_ptr": x_tt, **planes, "out_ptr": x_tt, "part_ptr": "*fp32", "cnt_ptr": "*i32", "b_ptr": x_tt,
           "M": "i32", "N": "i32", "n_words": "i32", "words_per_split": "i32"}
    strides = ("stride_xm", "stride_om", "stride_q", "stride_h", "stride_d", "stride_sc")
    sig.update({s: "i32" for s in strides})
    sig.update({c: "constexpr" for c in ("QTYPE", "BN", "NW", "BM", "SPLIT", "HAS_BIAS", "ASM")})
    return sig


def aot_specs(arch: Arch) -> list[dict]:
    """Every (qtype, x dtype, BM, split-K) GEMV config this arch launches, heaviest (BM=8, split) last."""
    specs = []
    for name in QTYPE_NAMES:
        for x_tt in _DTYPES.values():
            for bm in (1, 2, 4, GEMV_MAX_M):
                c = gemv_config(arch, name, bm)
                for split in (False, True):
                    specs.append(dict(
                        name=f"qgemv_{name.lower()}_bm{bm}{'_splitk' if split else ''}_{x_tt[1:]}",
                        fn=_qgemv_kernel, signature=_signature(name, x_tt),
                        constexprs=dict(QTYPE=qtype_code(name), BN=c["BN"], NW=c["NW"], BM=bm, SPLIT=split,
                                        HAS_BIAS=split, ASM=arch.backend == "cuda"),
                        num_warps=c["num_warps"], num_stages=c["num_stages"]))
    return specs


# ---------------------------------------------------------------- launcher
def _words(t: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8/int32 plane (N, B) viewed as int32 words (N, B / 4)."""
    return t if t.dtype == torch.int32 else t.view(torch.int32)


def plan_split_k(m: int, n_out: int, n_units: int, bn: int, step: int, split_k: int | None,
                 dtype: torch.dtype, device) -> tuple[int, int, int, torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:  # fmt: skip
    """Grid and buffers of a GEMV over n_out rows of n_units K units (words, chunks), `step` per
    K step: (row slabs, splits, units per split, out (M, N) dtype, part, counters). Default split_k:
    ~4 programs per SM, never a split shorter than 2 steps. With splits, part is a (splits, M, N)
    fp32 partial buffer and counters split_counters' (store_rows); without, both are `out` (unused)."""
    slabs = triton.cdiv(n_out, bn)
    steps = triton.cdiv(n_units, step)
    if split_k is None:
        split_k = max(1, min(triton.cdiv(4 * sm_count(device), slabs), steps // 2))
    per_split = triton.cdiv(steps, split_k) * step
    split_k = triton.cdiv(n_units, per_split)
    out = torch.empty(m, n_out, dtype=dtype, device=device)  # (M, N)
    if split_k == 1:
        return slabs, 1, per_split, out, out, out
    part = torch.empty(split_k, m, n_out, dtype=torch.float32, device=device)  # (splits, M, N)
    return slabs, split_k, per_split, out, part, split_counters(device, slabs)


def qgemv(x: torch.Tensor, w: QuantWeight, split_k: int | None = None,
          config: dict | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (M ≤ 8, K) fp16/bf16 -> (M, N) in x's dtype, + bias (N,) if given (`config` overrides
    gemv_config, for tuning). split_k: K slices whose fp32 partial sums the last program of each row
    slab adds in a fixed order, with the bias (store_rows; default: only when there are too few row
    slabs)."""
    if x.dim() != 2 or x.shape[1] != w.k or x.dtype not in _DTYPES or x.stride(1) != 1:
        raise ValueError(f"qgemv: x must be a row-contiguous fp16/bf16 (M, {w.k}) tensor for a {w.qtype} "
                         f"weight ({w.n_out}, {w.k}), got {tuple(x.shape)} {x.dtype}")
    m = x.shape[0]
    if not 1 <= m <= GEMV_MAX_M:
        raise ValueError(f"qgemv handles 1..{GEMV_MAX_M} rows of x, got {m}")
    arch = current_arch(x.device)
    c = {**gemv_config(arch, w.qtype, _bm(m)), **(config or {})}
    q, h, d, mm, sc = w.planes()
    q, h = _words(q), _words(h)  # (N, row_bytes / 4) int32
    if w.qtype in _SC_WORDS:
        sc = _words(sc)  # (N, K / 256 * 3) int32
    n_words = q.shape[1]
    slabs, split_k, per_split, out, part, cnt = plan_split_k(m, w.n_out, n_words, c["BN"], c["NW"], split_k,
                                                              x.dtype, x.device)
    _qgemv_kernel[(slabs, split_k)](
        x, q, h, d, mm, sc, out, part, cnt, out if bias is None else bias.contiguous(),
        m, w.n_out, n_words, per_split,
        x.stride(0), out.stride(0), q.stride(0), h.stride(0), d.stride(0), sc.stride(0),
        QTYPE=qtype_code(w.qtype), BN=c["BN"], NW=c["NW"], BM=_bm(m), SPLIT=split_k > 1,
        HAS_BIAS=bias is not None, ASM=arch.backend == "cuda",
        num_warps=c["num_warps"], num_stages=c["num_stages"])
    return out
