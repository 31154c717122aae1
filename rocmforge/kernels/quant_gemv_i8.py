"""Integer-dot GGUF GEMV for decode: out (M ≤ 8, N) = x (M, K) @ W^T with x quantized to int8.

x is first quantized per 32-element group (quantize_act.py: xq int8, scale xd, sums xs, the
scheme llama.cpp's MMVQ uses). A *chunk* of a weight row is the run of quant words that shares
its scales: Q4_K/Q5_K 8 words (64 elements), Q8_0 8 words (one block), the 32-blocks and Q6_K 4
words (32 elements). Each chunk feeds a "lo" and (except Q8_0) a "hi" *plane* of ≤ 32 elements
starting at element e_P, each with one scale S_P and one additive term B_P (the format's min, or
−OFF·S_P), so with the plane's weights w = S_P·q + B_P (q the plane's bytes, 0..63 or int8):

    out[m, n] = Σ_chunks Σ_P  S_P · xd[m, e_P/32] · Σ_{i∈P} q_i · xq[m, i]  +  B_P · Σ_{i∈P} xs-sum

Σ q_i·xq_i is exact in int32: four products per dp4a (PTX dp4a.s32.s32 on CUDA: every weight byte is
< 128 or Q8_0's int8, so reading both operands signed is right). Decoding a word of nibbles costs
two logic ops and a shift for 8 weights, against 8 logic ops + 8 adds + 8 FMAs in the fp32-lane
GEMV (quant_gemv.py), which was instruction-bound at ~2.4 T weights/s on sm90 for every format.
The result equals dequant(W) @ (xd·xq) up to fp32 summation order (reference_quant.quant_matmul_i8_ref).

Planes per format (ggml's layouts; c = chunk in its superblock, g = chunk in the row):
    Q4_0/Q4_1/Q5_0/Q5_1  chunk = block g: lo = low nibbles (elements 32g + 0..15), hi = high (+16);
                         Q5_*: bit j of the block's qh word is bit 4 of element j
    Q8_0                 chunk = block g: one plane of 32 int8
    Q4_K/Q5_K            chunk c of a superblock: lo = low nibbles = sub-block 2c, hi = high = 2c+1;
                         Q5_K: bit 2c / 2c+1 of qh byte i is bit 4 of element i
    Q6_K                 half hh, quarter u (16 ql bytes): lo = elements 128hh + 16u + 0..15, hi = +64,
                         2 high bits from qh at shift 2·(u // 2) / +4; one int8 scale per 16 elements
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch, sm_count
from rocmforge.kernels.gemv_decode import _spread4
from rocmforge.kernels.quant_gemv import _DTYPES, _SC_WORDS, _words, plan_split_k, store_rows
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, QuantWeight, plane_dtypes, qtype_code
from rocmforge.kernels.quantize_act import quantize_act

GEMV_I8_MAX_M = 8
_CHUNK_ELEMS = {"Q4_K": 64, "Q5_K": 64}  # every other format: 32


@triton.jit
def _dp4a(a, b, c, ASM: tl.constexpr):
    """c + Σ_t sbyte_t(a) · sbyte_t(b), int32 (the 4 signed bytes of each word)."""
    if ASM:
        r = tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c],
                                      dtype=tl.int32, is_pure=True, pack=1)
    else:
        r = c + ((a << 24) >> 24) * ((b << 24) >> 24) + ((a << 16) >> 24) * ((b << 16) >> 24)
        r += ((a << 8) >> 24) * ((b << 8) >> 24) + (a >> 24) * (b >> 24)
    return r


@triton.jit
def _ld(ptr, mask, EVEN: tl.constexpr):
    """Masked load (0 where masked), or a plain one when the launcher proved the tile full (EVEN):
    a masked load's register must be zeroed first, one more instruction per loaded word."""
    if EVEN:
        return tl.load(ptr)
    else:
        return tl.load(ptr, mask=mask, other=0)


@triton.jit
def _decode(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
            rows2, g2, mask2, mask3, QTYPE: tl.constexpr, EVEN: tl.constexpr):
    """Chunks g2 (1, NC) of rows rows2 (BN, 1) -> (lo_a, lo_b, hi_a, hi_b) (BN, NC, 4) byte words
    (_b: the chunk's second 4 words, 8-word chunks only), e_lo, e_hi (1, NC) first element of each
    plane, and S_lo, S_hi, B_lo, B_hi (BN, NC) fp32."""
    rows3 = rows2[:, :, None]
    g3 = g2[:, :, None]
    j = tl.arange(0, 4)[None, None, :]
    LO: tl.constexpr = 0x0F0F0F0F
    if QTYPE == 8 or QTYPE == 12 or QTYPE == 13:
        wa = _ld(q_ptr + rows3 * stride_q + 8 * g3 + j, mask3, EVEN)
        wb = _ld(q_ptr + rows3 * stride_q + 8 * g3 + 4 + j, mask3, EVEN)
    else:
        wa = _ld(q_ptr + rows3 * stride_q + 4 * g3 + j, mask3, EVEN)
        wb = wa
    zero = tl.zeros(g2.shape, tl.float32) + tl.zeros(rows2.shape, tl.float32)  # (BN, NC)
    if QTYPE == 8:  # Q8_0: int8 as they are
        d = _ld(d_ptr + rows2 * stride_d + g2, mask2, EVEN).to(tl.float32)
        return wa, wb, wa, wb, 32 * g2, 32 * g2, d, zero, zero, zero
    if QTYPE == 12 or QTYPE == 13:  # Q4_K / Q5_K
        lo_a, lo_b = wa & LO, wb & LO
        hi_a, hi_b = (wa >> 4) & LO, (wb >> 4) & LO
        sb = g2 >> 2
        c = g2 & 3
        if QTYPE == 13:  # the superblock's 8 qh words; element i's bits 2c / 2c+1 in qh byte i
            hrow = h_ptr + rows3 * stride_h + 8 * (g3 >> 2) + j
            qa = _ld(hrow, mask3, EVEN)
            qb = _ld(hrow + 4, mask3, EVEN)
            c3 = (2 * c)[:, :, None]
            lo_a |= ((qa >> c3) << 4) & 0x10101010
            lo_b |= ((qb >> c3) << 4) & 0x10101010
            hi_a |= ((qa >> (c3 + 1)) << 4) & 0x10101010
            hi_b |= ((qb >> (c3 + 1)) << 4) & 0x10101010
        # 6-bit scale / min of sub-blocks 2c, 2c+1 from the 3 packed words W0 W1 W2 (ggml
        # get_scale_min_k4): bytes 2c, 2c+1 of W0 / W1 for c < 2; else W2's nibbles + 2 bits of W0 / W1
        base = sc_ptr + rows2 * stride_sc + 3 * sb
        t = 16 * (c & 1)
        a = _ld(base, mask2, EVEN) >> t
        b = _ld(base + 1, mask2, EVEN) >> t
        w2 = _ld(base + 2, mask2, EVEN) >> t
        up = c >= 2
        sc0 = tl.where(up, (w2 & 15) | ((a >> 2) & 48), a & 63)
        mn0 = tl.where(up, ((w2 >> 4) & 15) | ((b >> 2) & 48), b & 63)
        sc1 = tl.where(up, ((w2 >> 8) & 15) | ((a >> 10) & 48), (a >> 8) & 63)
        mn1 = tl.where(up, ((w2 >> 12) & 15) | ((b >> 10) & 48), (b >> 8) & 63)
        d = _ld(d_ptr + rows2 * stride_d + sb, mask2, EVEN).to(tl.float32)
        dmin = _ld(m_ptr + rows2 * stride_d + sb, mask2, EVEN).to(tl.float32)
        return (lo_a, lo_b, hi_a, hi_b, 64 * g2, 64 * g2 + 32, d * sc0.to(tl.float32),
                d * sc1.to(tl.float32), -(dmin * mn0.to(tl.float32)), -(dmin * mn1.to(tl.float32)))
    if QTYPE == 14:  # Q6_K: chunk g = (superblock sb, half hh, quarter u)
        sb = g2 >> 3
        hh = (g2 >> 2) & 1
        u = g2 & 3
        qh = _ld(h_ptr + rows3 * stride_h + (16 * sb + 8 * hh + 4 * (u & 1))[:, :, None] + j, mask3, EVEN)
        s3 = (2 * (u >> 1))[:, :, None]
        lo = (wa & LO) | (((qh >> s3) & 0x03030303) << 4)
        hi = ((wa >> 4) & LO) | (((qh >> (s3 + 4)) & 0x03030303) << 4)
        s_idx = rows2 * stride_sc + 16 * sb + 8 * hh + u
        d = _ld(d_ptr + rows2 * stride_d + sb, mask2, EVEN).to(tl.float32)
        s_lo = d * _ld(sc_ptr + s_idx, mask2, EVEN).to(tl.int8, bitcast=True).to(tl.float32)
        s_hi = d * _ld(sc_ptr + s_idx + 4, mask2, EVEN).to(tl.int8, bitcast=True).to(tl.float32)
        e_lo = 256 * sb + 128 * hh + 16 * u
        return lo, lo, hi, hi, e_lo, e_lo + 64, s_lo, s_hi, -32.0 * s_lo, -32.0 * s_hi
    # 32-blocks: chunk = block g2
    lo = wa & LO
    hi = (wa >> 4) & LO
    if QTYPE == 6 or QTYPE == 7:  # Q5_0 / Q5_1: bit j of the block's qh word -> element j
        qhv = _ld(h_ptr + rows3 * stride_h + g3, mask3, EVEN)  # (BN, NC, 1)
        lo |= _spread4(qhv >> (4 * j))
        hi |= _spread4(qhv >> (16 + 4 * j))
    d = _ld(d_ptr + rows2 * stride_d + g2, mask2, EVEN).to(tl.float32)
    if QTYPE == 3 or QTYPE == 7:
        bias = _ld(m_ptr + rows2 * stride_d + g2, mask2, EVEN).to(tl.float32)
    else:
        bias = (-8.0 if QTYPE == 2 else -16.0) * d
    return lo, lo, hi, hi, 32 * g2, 32 * g2 + 16, d, d, bias, bias


@triton.jit
def _plane(xq_row, xd_row, xs_row, w_a, w_b, e, s, bias, mask_e, mask_x,
           TWO: tl.constexpr, ASM: tl.constexpr, EVEN: tl.constexpr):
    """(BN, NC) contribution of one plane for one row of x: e (1, NC) first element (>= 0, so
    shifts, not signed divisions), TWO: 8 words; masks (1, NC) / (1, NC, 4)."""
    xw = (e >> 2)[:, :, None] + tl.arange(0, 4)[None, None, :]  # (1, NC, 4) x word
    acc = _dp4a(w_a, _ld(xq_row + xw, mask_x, EVEN), tl.zeros(w_a.shape, tl.int32), ASM)
    if TWO:
        acc = _dp4a(w_b, _ld(xq_row + xw + 4, mask_x, EVEN), acc, ASM)
    xd = _ld(xd_row + (e >> 5), mask_e, EVEN)  # (1, NC)
    xs = _ld(xs_row + (e >> 4), mask_e, EVEN)
    if TWO:
        xs += _ld(xs_row + (e >> 4) + 1, mask_e, EVEN)
    return s * (xd * tl.sum(acc, axis=2).to(tl.float32)) + bias * xs


@triton.jit
def _qgemv_i8_kernel(xq_ptr, xd_ptr, xs_ptr, q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, out_ptr, part_ptr, cnt_ptr,
                     b_ptr, M, N, n_chunks, chunks_per_split, stride_xq, stride_xd, stride_xs, stride_om,
                     stride_q, stride_h, stride_d, stride_sc,
                     QTYPE: tl.constexpr, BN: tl.constexpr, NC: tl.constexpr, BM: tl.constexpr,
                     SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr, ASM: tl.constexpr, EVEN: tl.constexpr):
    """Program (i, j): rows [i·BN, +BN), chunks [j·chunks_per_split, +chunks_per_split), NC per step.
    xq_ptr is xq viewed as int32 words (M, K/4); q_ptr/h_ptr are planes viewed as int32 words (the
    Q5_K/Q6_K qh planes too), sc_ptr Q4_K/Q5_K's packed scales as int32 words, Q6_K's int8 bytes.
    SPLIT (split-K): quant_gemv.store_rows (partials in part_ptr, the last split of a slab writes out).
    EVEN: N % BN == 0 and every split is a whole number of steps, so weight loads need no mask.
    NOTE: issuing the next step's loads before this step's compute (register prefetch) measured no
    faster on the H200 (Q4_K 28672x4096 31.4 vs 29.9 us at BN=8 / NC=4 / 1 warp): not done."""
    TWO: tl.constexpr = QTYPE == 8 or QTYPE == 12 or QTYPE == 13
    HAS_HI: tl.constexpr = QTYPE != 8
    EVEN_X: tl.constexpr = EVEN and BM == 1  # rows of x past M are masked whenever BM > 1
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    rows2 = offs_n.to(tl.int64)[:, None]  # (BN, 1)
    g_lo = tl.program_id(1) * chunks_per_split
    g_hi = tl.minimum(g_lo + chunks_per_split, n_chunks)
    offs_m = tl.arange(0, BM)
    acc = tl.zeros((BN, NC), dtype=tl.float32)  # BM == 1: per-(row, chunk) partial sums
    acc_m = tl.zeros((BM, BN), dtype=tl.float32)  # BM > 1: per-step reduced sums
    for g0 in range(g_lo, g_hi, NC):
        g2 = g0 + tl.arange(0, NC)[None, :]  # (1, NC) chunk in the row
        mask_c = g2 < g_hi
        mask2 = mask_n[:, None] & mask_c  # (BN, NC)
        mask3 = mask2[:, :, None]  # (BN, NC, 1)
        mask_x = (mask_c[:, :, None]) & (tl.arange(0, 4)[None, None, :] < 4)  # (1, NC, 4)
        lo_a, lo_b, hi_a, hi_b, e_lo, e_hi, s_lo, s_hi, b_lo, b_hi = _decode(
            q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
            rows2, g2, mask2, mask3, QTYPE, EVEN)
        for mi in tl.static_range(BM):
            xq_row = xq_ptr + mi * stride_xq
            xd_row = xd_ptr + mi * stride_xd
            xs_row = xs_ptr + mi * stride_xs
            # NOTE: a tensor compare: a scalar one breaks the interpreter's mask
            me = mask_c & (g2 * 0 + mi < M)
            mx = mask_x & me[:, :, None]
            c = _plane(xq_row, xd_row, xs_row, lo_a, lo_b, e_lo, s_lo, b_lo, me, mx, TWO, ASM, EVEN_X)
            if HAS_HI:
                c += _plane(xq_row, xd_row, xs_row, hi_a, hi_b, e_hi, s_hi, b_hi, me, mx, TWO, ASM, EVEN_X)
            if BM == 1:
                acc += c
            else:
                acc_m += tl.where(offs_m[:, None] == mi, tl.sum(c, axis=1)[None, :], 0.0)
    if BM == 1:
        acc_m = tl.sum(acc, axis=1)[None, :]  # (1, BN)
    store_rows(acc_m, out_ptr, part_ptr, cnt_ptr, b_ptr, offs_m, offs_n, M, N, stride_om, SPLIT, HAS_BIAS)


# ---------------------------------------------------------------- per-arch configs
_H_WORDS = ("Q5_K", "Q6_K")  # qh bytes read as int32 words (Q5_0/Q5_1's plane is int32 already)


def supported(arch: Arch) -> bool:
    """The integer-dot GEMV runs where dp4a is one instruction (CUDA sm61+); elsewhere the fp32-lane
    GEMV (quant_gemv.py). NOTE: CPU tests run it under the interpreter with ASM off."""
    return arch.backend == "cuda"


BIG_ROWS_PER_SM = 192  # M=1 Q4_K / Q5_K weights with more rows per SM than this take 1 warp, 2 rows
# M=1: one row per program and one quant chunk per lane (one warp and 32 chunks, or two and 64); the K
# types Q4_K / Q5_K two rows (H200 sweep of 7 tile configs x 8 qtypes x 5 shapes, gemv_i8_h200.md)
_M1_CONFIGS = {"Q4_0": (1, 64, 2), "Q4_1": (1, 64, 2), "Q5_0": (1, 64, 2), "Q5_1": (1, 32, 1),
               "Q8_0": (1, 32, 1), "Q4_K": (2, 32, 2), "Q5_K": (1, 32, 1), "Q6_K": (1, 32, 1)}


SHORT_K = 1024  # M=1 weights of rows this short and more than SHORT_ROWS_PER_SM rows per SM: 2 rows
SHORT_ROWS_PER_SM = 32


def gemv_i8_config(arch: Arch, qtype: str, bm: int = 1, rows_per_sm: float = 0.0, k: int = 4096) -> dict:
    """BN rows × NC chunks per step; rows_per_sm: the weight's rows / the device's SMs. Small row tiles
    won everywhere in the H200 sweep (gemv_i8_h200.md): with one or two rows a program, ~4-8k programs
    keep more loads in flight than 8-row tiles, whose programs did not all fit on the SMs at once.
    M=1 (_M1_CONFIGS) at 14336x4096: Q4_K 14.6 us (the old 8/8/2: 16.2), Q6_K 16.5 (29.5), Q8_0 17.9
    (26.2), Q4_0 12.2 (22.0); Q4_K / Q5_K above BIG_ROWS_PER_SM (the 8B's fused gate_up, 28672 rows)
    2/16/1: Q4_K 24.7 vs 26.2 us. Rows of K <= SHORT_K are one short step a program: with many rows
    (the 0.5B's 151936x896 Q8_0 head, 9728x896 gate_up) one-row programs ran 98 / 7.9 us, 2/16/1
    52 / 6.1. M=2..8: BN=2 / NC=16 / 1 warp was best or within 3% in 17 of 18 cases (Q4_K, Q6_K, Q8_0
    at 14336x4096 and 4096x4096), e.g. Q6_K M=8 14336x4096 70 us (old 102)."""
    if bm == 1:
        bn, nc, warps = _M1_CONFIGS[qtype]
        if (qtype in ("Q4_K", "Q5_K") and rows_per_sm > BIG_ROWS_PER_SM) or (
                k <= SHORT_K and rows_per_sm > SHORT_ROWS_PER_SM):
            bn, nc, warps = 2, 16, 1
        return dict(BN=bn, NC=nc, num_warps=warps, num_stages=1)
    return dict(BN=2, NC=16, num_warps=1, num_stages=1)


def _signature(qtype: str, out_tt: str) -> dict:  # out_tt: x's dtype (out and bias)
    planes = {**plane_dtypes(qtype), "q_ptr": "*i32"}
    if qtype in _H_WORDS:
        planes["h_ptr"] = "*i32"
    if qtype in _SC_WORDS:
        planes["sc_ptr"] = "*i32"
    sig = {"xq_ptr": "*i32", "xd_ptr": "*fp32", "xs_ptr": "*fp32", **planes, "out_ptr": out_tt,
           "part_ptr": "*fp32", "cnt_ptr": "*i32", "b_ptr": out_tt, "M": "i32", "N": "i32", "n_chunks": "i32",
           "chunks_per_split": "i32"}
    for s in ("stride_xq", "stride_xd", "stride_xs", "stride_om", "stride_q", "stride_h", "stride_d",
              "stride_sc"):
        sig[s] = "i32"
    sig.update({c: "constexpr" for c in ("QTYPE", "BN", "NC", "BM", "SPLIT", "HAS_BIAS", "ASM", "EVEN")})
    return sig


def aot_specs(arch: Arch) -> list[dict]:
    """Every (qtype, out dtype, BM, split-K) config this arch launches (none off CUDA)."""
    if not supported(arch):
        return []
    specs = []
    for name in QTYPE_NAMES:
        for out_tt in _DTYPES.values():
            for bm, big in ((1, False), (1, True), (2, False), (4, False), (GEMV_I8_MAX_M, False)):
                c = gemv_i8_config(arch, name, bm, 2 * BIG_ROWS_PER_SM, SHORT_K) if big else \
                    gemv_i8_config(arch, name, bm)
                for split in (False,) if big else (False, True):  # many-row weights never split K
                    specs.append(dict(
                        name=f"qgemv_i8_{name.lower()}_bm{bm}{'_big' if big else ''}"
                             f"{'_splitk' if split else ''}_{out_tt[1:]}",
                        fn=_qgemv_i8_kernel, signature=_signature(name, out_tt),
                        constexprs=dict(QTYPE=qtype_code(name), BN=c["BN"], NC=c["NC"], BM=bm,
                                        SPLIT=split, HAS_BIAS=split, ASM=True, EVEN=True),
                        num_warps=c["num_warps"], num_stages=c["num_stages"]))
    return specs


# ---------------------------------------------------------------- launcher
def qgemv_i8(x: torch.Tensor, w: QuantWeight, split_k: int | None = None, config: dict | None = None,
             bias: torch.Tensor | None = None, asm: bool | None = None) -> torch.Tensor:
    """x (M ≤ 8, K) fp16/bf16 -> (M, N) in x's dtype (+ bias (N,)): x quantized to int8 per 32
    (quantize_act), then the integer-dot GEMV (qgemv_i8_quantized)."""
    if x.dim() != 2 or x.shape[1] != w.k or x.dtype not in _DTYPES or x.stride(1) != 1:
        raise ValueError(f"qgemv_i8: x must be a row-contiguous fp16/bf16 (M, {w.k}) tensor for a "
                         f"{w.qtype} weight ({w.n_out}, {w.k}), got {tuple(x.shape)} {x.dtype}")
    return qgemv_i8_quantized(quantize_act(x), w, x.dtype, split_k, config, bias, asm)


def qgemv_i8_quantized(xqds: tuple[torch.Tensor, torch.Tensor, torch.Tensor], w: QuantWeight,
                       out_dtype: torch.dtype, split_k: int | None = None, config: dict | None = None,
                       bias: torch.Tensor | None = None, asm: bool | None = None) -> torch.Tensor:
    """(xq (M, K) int8, xd (M, K/32), xs (M, K/16)) from quantize_act -> (M, N) out_dtype (+ bias).
    split_k: K slices whose fp32 partials one reduce kernel adds in a fixed order, with the bias
    (default: only when there are too few row slabs); `config` overrides gemv_i8_config (tuning);
    `asm` forces the dp4a instruction on or off (default: on CUDA)."""
    xq, xd, xs = xqds
    m = xq.shape[0]
    if not 1 <= m <= GEMV_I8_MAX_M or xq.shape[1] != w.k:
        raise ValueError(f"qgemv_i8 handles 1..{GEMV_I8_MAX_M} rows of K={w.k}, got {tuple(xq.shape)}")
    arch = current_arch(xq.device)
    bm = 1 if m == 1 else triton.next_power_of_2(m)
    c = {**gemv_i8_config(arch, w.qtype, bm, w.n_out / sm_count(xq.device), w.k), **(config or {})}
    q, h, d, mm, sc = w.planes()
    q = _words(q)
    if w.qtype in _H_WORDS:
        h = _words(h)
    if w.qtype in _SC_WORDS:
        sc = _words(sc)
    n_chunks = w.k // _CHUNK_ELEMS.get(w.qtype, 32)
    slabs, split_k, per_split, out, part, cnt = plan_split_k(m, w.n_out, n_chunks, c["BN"], c["NC"], split_k,
                                                              out_dtype, xq.device)
    xw = xq.view(torch.int32)  # (M, K / 4)
    _qgemv_i8_kernel[(slabs, split_k)](
        xw, xd, xs, q, h, d, mm, sc, out, part, cnt, out if bias is None else bias.contiguous(),
        m, w.n_out, n_chunks, per_split, xw.stride(0), xd.stride(0), xs.stride(0), out.stride(0),
        q.stride(0), h.stride(0), d.stride(0), sc.stride(0),
        QTYPE=qtype_code(w.qtype), BN=c["BN"], NC=c["NC"], BM=bm, SPLIT=split_k > 1,
        HAS_BIAS=bias is not None, ASM=(arch.backend == "cuda") if asm is None else asm,
        EVEN=w.n_out % c["BN"] == 0 and n_chunks % per_split == 0,
        num_warps=c["num_warps"], num_stages=c["num_stages"])
    return out
