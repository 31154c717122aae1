"""GGUF dequantization on the GPU: planes of a block-quantized weight -> (N, K) fp32/fp16/bf16.

Math (per block of BS columns, ggml's formats; see reference_quant.py for the decoding):

    Q4_0 d(q-8) · Q4_1 dq+m · Q5_0 d(q-16) · Q5_1 dq+m · Q8_0 dq
    Q4_K/Q5_K (d·sc_s)q − dmin·m_s · Q6_K (d·sc_s)(q−32)

`dequant_tile` decodes a (BN rows) × (NG groups) × (G lanes) tile of both planes r ∈ {0, 1} in
registers; element (gg, r, i) is column k = gg·2G + r·G + i (quant_layouts.py). It is the one
decoder: the dequant kernel stores it, the matmul kernels (quant_matmul.py) consume it.
Every product is exact in fp32 and the one add per element is a single rounding, so FMA fusion
cannot change a bit: fp32 output is bit-exact with gguf-py; fp16/bf16 output is that value rounded
to nearest-even.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch
from rocmforge.kernels.quant_layouts import (
    QTYPE_NAMES,
    QuantWeight,
    group_bytes,
    plane_dtypes,
    qtype_code,
    split_planes,
)

_Q4_0, _Q4_1, _Q5_0, _Q5_1, _Q8_0, _Q4_K, _Q5_K, _Q6_K = 2, 3, 6, 7, 8, 12, 13, 14


@triton.jit
def _k_scale_min(sc_ptr, base, s, mask):
    """6-bit (scale, min) of sub-block s (0..7) from the 12 packed bytes at sc_ptr + base."""
    a = tl.load(sc_ptr + base + s, mask=mask, other=0).to(tl.int32)
    b = tl.load(sc_ptr + base + s + 4, mask=mask, other=0).to(tl.int32)
    c = tl.load(sc_ptr + base + tl.where(s >= 4, s - 4, s), mask=mask, other=0).to(tl.int32)
    sc = tl.where(s < 4, a & 63, (b & 15) | ((c >> 6) << 4))
    mn = tl.where(s < 4, b & 63, (b >> 4) | ((a >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def dequant_tile(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
                 offs_n, mask_n, gg0, n_groups,
                 QTYPE: tl.constexpr, NG: tl.constexpr, G: tl.constexpr):
    """Planes r=0, r=1 of rows offs_n (BN,), groups gg0..gg0+NG -> two (BN, NG, G) fp32 tiles.
    Masked rows/groups decode to 0. Strides are per row, in elements of each plane."""
    rows = offs_n.to(tl.int64)[:, None, None]  # (BN, 1, 1)
    gg = gg0 + tl.arange(0, NG)[None, :, None]  # (1, NG, 1) global group index
    ii = tl.arange(0, G)[None, None, :]  # (1, 1, G) lane
    mask = mask_n[:, None, None] & (gg < n_groups)  # (BN, NG, 1)
    if QTYPE == 8:  # Q8_0: plane r = bytes [16r, 16r + 16) of block gg
        p0 = q_ptr + rows * stride_q + gg * 32 + ii
        q0 = tl.load(p0, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        q1 = tl.load(p0 + 16, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        d = tl.load(d_ptr + rows * stride_d + gg, mask=mask, other=0).to(tl.float32)
        w0 = d * q0
        w1 = d * q1
    elif QTYPE == 14:  # Q6_K: group gg = half hh of super-block sb
        byte = tl.load(q_ptr + rows * stride_q + gg * 64 + ii, mask=mask, other=0).to(tl.int32)
        sb = gg // 2
        hh = gg % 2
        qh = tl.load(h_ptr + rows * stride_h + sb * 64 + hh * 32 + (ii % 32), mask=mask, other=0).to(tl.int32)
        shift = 2 * (ii // 32)
        q0 = ((byte & 15) | (((qh >> shift) & 3) << 4)) - 32
        q1 = ((byte >> 4) | (((qh >> (shift + 4)) & 3) << 4)) - 32
        s_base = sc_ptr + rows * stride_sc + sb * 16 + hh * 8 + ii // 16
        s0 = tl.load(s_base, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        s1 = tl.load(s_base + 4, mask=mask, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        d = tl.load(d_ptr + rows * stride_d + sb, mask=mask, other=0).to(tl.float32)
        w0 = (d * s0) * q0.to(tl.float32)
        w1 = (d * s1) * q1.to(tl.float32)
    else:  # 4-bit low planes: lo nibble -> r=0, hi nibble -> r=1
        byte = tl.load(q_ptr + rows * stride_q + gg * G + ii, mask=mask, other=0).to(tl.int32)
        q0 = byte & 15
        q1 = byte >> 4
        if QTYPE == 6 or QTYPE == 7:  # Q5_0 / Q5_1: bit j of the block's qh word
            qh = tl.load(h_ptr + rows * stride_h + gg, mask=mask, other=0)
            q0 = q0 | (((qh >> ii) & 1) << 4)
            q1 = q1 | (((qh >> (ii + 16)) & 1) << 4)
        if QTYPE == 12 or QTYPE == 13:  # Q4_K / Q5_K: group gg = chunk c of super-block sb
            sb = gg // 4
            s0 = (gg % 4) * 2
            if QTYPE == 13:
                qh = tl.load(h_ptr + rows * stride_h + sb * 32 + ii, mask=mask, other=0).to(tl.int32)
                q0 = q0 | (((qh >> s0) & 1) << 4)
                q1 = q1 | (((qh >> (s0 + 1)) & 1) << 4)
            base = rows * stride_sc + sb * 12
            sc0, mn0 = _k_scale_min(sc_ptr, base, s0, mask)
            sc1, mn1 = _k_scale_min(sc_ptr, base, s0 + 1, mask)
            d = tl.load(d_ptr + rows * stride_d + sb, mask=mask, other=0).to(tl.float32)
            dmin = tl.load(m_ptr + rows * stride_d + sb, mask=mask, other=0).to(tl.float32)
            w0 = (d * sc0) * q0.to(tl.float32) - dmin * mn0
            w1 = (d * sc1) * q1.to(tl.float32) - dmin * mn1
        else:
            d = tl.load(d_ptr + rows * stride_d + gg, mask=mask, other=0).to(tl.float32)
            if QTYPE == 2:
                w0 = d * (q0 - 8).to(tl.float32)
                w1 = d * (q1 - 8).to(tl.float32)
            elif QTYPE == 6:
                w0 = d * (q0 - 16).to(tl.float32)
                w1 = d * (q1 - 16).to(tl.float32)
            else:  # Q4_1 / Q5_1
                m = tl.load(m_ptr + rows * stride_d + gg, mask=mask, other=0).to(tl.float32)
                w0 = d * q0.to(tl.float32) + m
                w1 = d * q1.to(tl.float32) + m
    return w0, w1


@triton.jit
def _dequant_kernel(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, out_ptr, rows_ptr, N, n_groups,
                    stride_q, stride_h, stride_d, stride_sc, stride_on,
                    QTYPE: tl.constexpr, NG: tl.constexpr, G: tl.constexpr, BN: tl.constexpr,
                    GATHER: tl.constexpr):
    """out (N, K) = dequant(planes); program (i, j) writes rows [i·BN, +BN) × groups [j·NG, +NG).
    GATHER: out row r is weight row rows[r] (rows (N,) int64: an embedding lookup of N ids)."""
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    gg0 = tl.program_id(1) * NG
    w_rows = tl.load(rows_ptr + offs_n, mask=mask_n, other=0) if GATHER else offs_n
    w0, w1 = dequant_tile(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
                          w_rows, mask_n, gg0, n_groups, QTYPE, NG, G)
    gg = gg0 + tl.arange(0, NG)[None, :, None]
    k0 = gg * (2 * G) + tl.arange(0, G)[None, None, :]  # (1, NG, G)
    mask = mask_n[:, None, None] & (gg < n_groups)
    o = out_ptr + offs_n.to(tl.int64)[:, None, None] * stride_on + k0
    tl.store(o, w0.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(o + G, w1.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- per-arch configs
_TORCH_TO_TT = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def dequant_config(arch: Arch, qtype: str) -> dict:
    """Tile of BN rows × 256 quant bytes (NG·G), 4 warps: ~16 bytes of quants per thread at wave64."""
    g = group_bytes(qtype)
    bn = 16 if arch.warp_size == 64 else 8
    return dict(BN=bn, NG=256 // g, G=g, num_warps=4, num_stages=1)


def aot_specs(arch: Arch) -> list[dict]:
    """Every (qtype, output dtype) dequant kernel this arch launches, and the row gather of the
    quantized embedding (fp16/bf16: the GPU engine's dtypes), for aot.py."""
    specs = []
    for name in QTYPE_NAMES:
        cfg = dequant_config(arch, name)
        for tt in _TORCH_TO_TT.values():
            for gather in (False, True) if tt != "*fp32" else (False,):
                sig = {**plane_dtypes(name), "out_ptr": tt, "rows_ptr": "*i64", "N": "i32", "n_groups": "i32"}
                sig.update({s: "i32" for s in ("stride_q", "stride_h", "stride_d", "stride_sc", "stride_on")})
                sig.update({c: "constexpr" for c in ("QTYPE", "NG", "G", "BN", "GATHER")})
                specs.append(dict(
                    name=f"dequant_{'rows_' if gather else ''}{name.lower()}_{tt[1:]}", fn=_dequant_kernel,
                    signature=sig, constexprs=dict(QTYPE=qtype_code(name), NG=cfg["NG"], G=cfg["G"],
                                                   BN=cfg["BN"], GATHER=gather),
                    num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))
    return specs


def plane_strides(w: QuantWeight) -> tuple[int, int, int, int]:
    """Row strides (elements) of q, h, d, sc; m shares d's."""
    q, h, d, m, sc = w.planes()
    for t in (q, h, d, m, sc):
        assert t.is_contiguous() and t.dim() == 2, "weight planes must be contiguous 2-D tensors"
    return q.stride(0), h.stride(0), d.stride(0), sc.stride(0)


_NO_ROWS: dict[torch.device, torch.Tensor] = {}


def _no_rows(device: torch.device) -> torch.Tensor:  # (1,) int64: rows without GATHER (never read)
    if device not in _NO_ROWS:
        _NO_ROWS[device] = torch.zeros(1, dtype=torch.int64, device=device)
    return _NO_ROWS[device]


def dequantize_planes(w: QuantWeight, out_dtype: torch.dtype = torch.float16,
                      rows: torch.Tensor | None = None) -> torch.Tensor:
    """QuantWeight (N, K) on a GPU (or the interpreter) -> (N, K) `out_dtype` tensor; with `rows`
    ((T,) int64 on w's device, each in [0, N)) only those rows -> (T, K): an embedding lookup."""
    if out_dtype not in _TORCH_TO_TT:
        raise ValueError(f"dequantize: out_dtype must be float32/float16/bfloat16, got {out_dtype}")
    if rows is not None and (rows.dim() != 1 or rows.dtype != torch.int64 or rows.device != w.q.device):
        raise ValueError(f"dequantize rows: need a 1-D int64 tensor on {w.q.device}, got "
                         f"{tuple(rows.shape)} {rows.dtype} on {rows.device}")
    cfg = dequant_config(current_arch(w.q.device), w.qtype)
    n = w.n_out if rows is None else rows.shape[0]
    out = torch.empty(n, w.k, dtype=out_dtype, device=w.q.device)  # (N or T, K)
    if n == 0:
        return out
    grid = (triton.cdiv(n, cfg["BN"]), triton.cdiv(w.n_groups, cfg["NG"]))
    rows_arg = rows.contiguous() if rows is not None else _no_rows(w.q.device)
    _dequant_kernel[grid](*w.planes(), out, rows_arg, n, w.n_groups, *plane_strides(w), out.stride(0),
                          QTYPE=qtype_code(w.qtype), NG=cfg["NG"], G=cfg["G"], BN=cfg["BN"],
                          GATHER=rows is not None, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out


def dequantize_gpu(raw: torch.Tensor, qtype: str, shape: tuple[int, int],
                   out_dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """raw GGUF bytes (N, row_bytes) uint8 -> (N, K) `out_dtype`; fp32 is bit-exact with gguf-py."""
    n, k = shape
    return dequantize_planes(split_planes(raw, qtype, n, k), out_dtype)
