"""Fused GGUF dequant-matmul: out (M, N) = x (M, K) @ W^T with W (N, K) block-quantized.

    out[m, n] = Σ_k x[m, k] · w[n, k],   w = dequant(planes)  (dequant.py, exact in fp32)

Four paths, all accumulating in fp32:

- "gemv_i8" (M ≤ 8, CUDA's decode path): quant_gemv_i8.py, x quantized to int8 per 32 elements
  (as llama.cpp's MMVQ does), weight bytes dotted with dp4a, scales applied per plane.
- "gemv" (M ≤ 8, the decode path elsewhere): quant_gemv.py, 16-byte quant vectors per lane decoded with
  integer tricks and per-vector scales, one cross-lane reduction after the K loop.
- "gemm" (9 ≤ M ≤ 16): a (BM, BN) output tile; per step the (BN, 2P) weight tile is decoded with
  `dequant_tile`, cast to x's dtype and fed to tl.dot (tensor cores) with the matching columns of x.
- "dequant_mm": dequantize W to x's dtype, then torch.matmul (cuBLAS / hipBLASLt).

`choose_path(M, arch)` picks from measurements (benchmarks/notes_quant_matmul.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels import quant_gemv, quant_gemv_i8
from rocmforge.kernels.arch import Arch, current_arch
from rocmforge.kernels.dequant import dequant_tile, dequantize_planes, plane_strides
from rocmforge.kernels.quant_gemv import GEMV_MAX_M, qgemv
from rocmforge.kernels.quant_gemv_i8 import GEMV_I8_MAX_M, qgemv_i8, qgemv_i8_quantized
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, QuantWeight, group_bytes, qtype_code
from rocmforge.kernels.quant_layouts import split_planes as _split_planes

__all__ = ["GEMV_MAX_M", "choose_path", "qgemm", "qgemv", "qgemv_i8", "quant_matmul"]


@triton.jit
def _qgemm_kernel(x_ptr, q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, out_ptr, M, N, n_groups,
                  stride_xm, stride_om, stride_q, stride_h, stride_d, stride_sc,
                  QTYPE: tl.constexpr, NG: tl.constexpr, G: tl.constexpr, BM: tl.constexpr,
                  BN: tl.constexpr, GROUP_M: tl.constexpr):
    """Program → one (BM, BN) tile of out, programs ordered GROUP_M tiles down first (L2 reuse of W)."""
    pid = tl.program_id(0)
    n_pid_m = tl.cdiv(M, BM)
    n_pid_n = tl.cdiv(N, BN)
    first_m = (pid // (GROUP_M * n_pid_n)) * GROUP_M
    size_m = tl.minimum(n_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_pid_n)) % size_m
    pid_n = (pid % (GROUP_M * n_pid_n)) // size_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_m = offs_m < M
    mask_n = offs_n < N
    lanes = tl.arange(0, G)[None, :]
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm  # (BM, 1)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for gg0 in range(0, n_groups, NG):
        w0, w1 = dequant_tile(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
                              offs_n, mask_n, gg0, n_groups, QTYPE, NG, G)  # 2 × (BN, NG, G)
        w0 = tl.reshape(w0, (BN, NG * G)).to(x_ptr.dtype.element_ty)
        w1 = tl.reshape(w1, (BN, NG * G)).to(x_ptr.dtype.element_ty)
        gg = gg0 + tl.arange(0, NG)[:, None]
        k0 = tl.reshape(gg * (2 * G) + lanes, (NG * G,))  # (P,) columns of plane 0
        mk = tl.reshape((gg < n_groups) & (lanes >= 0), (NG * G,))
        xmask = mask_m[:, None] & mk[None, :]
        x0 = tl.load(x_rows + k0[None, :], mask=xmask, other=0)  # (BM, P)
        x1 = tl.load(x_rows + k0[None, :] + G, mask=xmask, other=0)
        acc = tl.dot(x0, tl.trans(w0), acc)
        acc = tl.dot(x1, tl.trans(w1), acc)
    o = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ---------------------------------------------------------------- per-arch configs and path choice
_DTYPES = {torch.float16: "*fp16", torch.bfloat16: "*bf16"}
# NOTE: BM=64/128 tiles measured 20 TFLOP/s on an H200 (vs 450 for dequant + cuBLAS) and spill on
# sm90/gfx942, so only the BM=16 tile ships; M > 16 goes through dequant_mm.
_GEMM_BMS = (16,)


def gemm_config(arch: Arch, qtype: str, bm: int) -> dict:
    """(BM, 64) output tile, K step 2·64 columns; LDS-bound AMD parts pipeline 2 deep.
    NOTE: BN=128 at BM=128 spills (two decoded fp32 weight planes + the accumulator) on sm90/gfx942."""
    g = group_bytes(qtype)
    stages = 3 if arch.backend == "cuda" else 2
    bn, warps = 64, 4
    # NOTE: AOT register sweeps (BN 32/64 x 4/8 warps x 1/2 stages, BM=16): on NVIDIA 4 warps hold the
    # decoded tile in 255 registers and spill for Q8_0 (sm90), Q5_0/Q5_1 (sm80), Q5_K (both); 8 warps fit,
    # Q5_K also needs BN=32. On gfx1100 the clean point is BN=32, 8 warps, 1 stage (Q8_0: 4 warps, 2
    # stages). gfx942/gfx90a compile the default clean. Speed of these tiles is not yet re-measured.
    if arch.backend == "cuda" and qtype != "Q4_K":  # Q4_K: 4 warps fit; 8 spill 256-304 B
        warps, bn = 8, (32 if qtype == "Q5_K" else 64)
    elif arch.is_rdna:
        bn, warps, stages = (32, 4, 2) if qtype == "Q8_0" else (32, 8, 1)
    if qtype == "Q6_K":
        # NOTE: its per-element high-bit/scale gathers keep 64-bit pointer tiles live: BN=64 or a
        # 2-stage pipeline spills on every target (AOT check); (16 × 128) over 8 warps fits all five.
        bn, stages, warps = 16, 1, 8
    return dict(BM=bm, BN=bn, NG=64 // g, G=g, GROUP_M=8, num_warps=warps, num_stages=stages)


def choose_path(m: int, arch: Arch, qtype: str = "") -> str:
    """"gemv_i8" | "gemv" | "gemm" | "dequant_mm" for M rows of x, from H200 measurements
    (benchmarks/results/gemv_i8_h200.md, quant_matmul_h200.md).

    CUDA: at M=1 the integer-dot GEMV with its one-row tiles beats the fp32-lane GEMV for every type
    (14336x4096: Q4_K 14.6 vs 23.6 us, Q6_K 16.5 vs 24.8, Q8_0 17.9 vs 24.8, Q4_0 12.2 vs 18.0; the
    8B's Q6_K output head 112 vs 165; the one shape measured where lane still wins, by 9%: the 0.5B's
    151936x896 Q8_0 head, 47.8 vs 52.3). At M=2..8 the lane GEMV costs 2.5-4x per extra row while the
    i8 GEMV grows slowly (14336x4096 M=8: Q4_K 63 us, Q6_K 70, Q8_0 55; dequant + cuBLAS 91-95
    us; Q6_K's 4096x14336 at M=8 102 vs 94 loses, its M=5..7 and other shapes win): i8 to 8 rows,
    except the 5-bit types above 4 rows (M=8 with the earlier 8-row tiles: Q5_0 97 / Q5_1 99 / Q5_K
    101 us vs dequant + cuBLAS 86 / 89 / 86; Q5_K with the new tiles 69 / 27 / 86 us at 14336x4096,
    4096x4096, 4096x14336 vs 85 / 25 / 86, a tie kept as it was; Q5_0 / Q5_1 not re-measured).
    Then the GEMM to 16 rows (Q6_K and the 5-bit types: dequant + cuBLAS; their GEMM tile spills or
    loses, BM=16 at 4096x4096 Q5_0 55 vs 25 us), dequant + cuBLAS above. AMD is unmeasured: the
    earlier crossovers."""
    if arch.backend == "cuda":
        if m == 1:
            return "gemv_i8"
        if m <= 4 or (m <= GEMV_I8_MAX_M and qtype not in _I8_TO_4):
            return "gemv_i8"
        return "gemm" if m <= 16 and qtype not in _NO_GEMM else "dequant_mm"
    if m <= GEMV_MAX_M:
        return "gemv"
    return "gemm" if m <= 16 else "dequant_mm"


def int8_wanted(rows: int, k: int, dtype: torch.dtype, device: torch.device, qtypes) -> bool:
    """Whether a (rows, k) activation about to enter GEMVs on weights of `qtypes` would be quantized by
    one of them (choose_path picks the integer-dot GEMV): then the kernel writing it should write its
    int8 form too (quantize_act.attach: rmsnorm, activations)."""
    if device.type != "cuda" or k % 32 or dtype not in (torch.float16, torch.bfloat16):
        return False
    arch = current_arch(device)
    return any(choose_path(rows, arch, qt) == "gemv_i8" for qt in qtypes)


_I8_TO_4 = ("Q5_0", "Q5_1", "Q5_K")  # above 4 rows: dequant + cuBLAS
_NO_GEMM = (*_I8_TO_4, "Q6_K")  # 9..16 rows: dequant + cuBLAS


def _signature(qtype: str, x_tt: str) -> dict:
    from rocmforge.kernels.quant_layouts import plane_dtypes

    sig = {"x_ptr": x_tt, **plane_dtypes(qtype), "out_ptr": x_tt, "M": "i32", "N": "i32", "n_groups": "i32"}
    strides = ("stride_xm", "stride_om", "stride_q", "stride_h", "stride_d", "stride_sc")
    sig.update({s: "i32" for s in strides})
    sig.update({c: "constexpr" for c in ("QTYPE", "NG", "G", "BM", "BN", "GROUP_M")})
    return sig


_ROWS_OF_BM = {1: (1,), 2: (2,), 4: (3, 4), 8: tuple(range(5, 9)), 16: tuple(range(9, 17))}


def _chosen(spec: dict, path: str, arch: Arch) -> bool:
    """Whether choose_path sends some row count of the spec's BM bucket to `path` for its quant type
    (a config only a forced `path=` reaches is not one this arch launches)."""
    name = next(n for n in QTYPE_NAMES if qtype_code(n) == spec["constexprs"]["QTYPE"])
    return any(choose_path(m, arch, name) == path for m in _ROWS_OF_BM[spec["constexprs"]["BM"]])


def aot_specs(arch: Arch) -> list[dict]:
    """Every GEMV (quant_gemv.aot_specs) and GEMM (per BM) config this arch launches: those of a
    (kernel, quant type, BM) that choose_path picks for some row count on `arch`. NOTE: on CUDA that
    leaves out the fp32-lane GEMV (the integer-dot one wins at every M it takes), whose Q5_K BM=8
    split-K held 8 B of stack on sm90 in the full AOT run."""
    specs = [s for s in quant_gemv.aot_specs(arch) if _chosen(s, "gemv", arch)]
    specs += [s for s in quant_gemv_i8.aot_specs(arch) if _chosen(s, "gemv_i8", arch)]
    for name in QTYPE_NAMES:
        for x_tt in _DTYPES.values():
            for bm in _GEMM_BMS:
                c = gemm_config(arch, name, bm)
                specs.append(dict(
                    name=f"qgemm_{name.lower()}_bm{bm}_{x_tt[1:]}", fn=_qgemm_kernel,
                    signature=_signature(name, x_tt),
                    constexprs=dict(QTYPE=qtype_code(name), NG=c["NG"], G=c["G"], BM=bm, BN=c["BN"],
                                    GROUP_M=c["GROUP_M"]),
                    num_warps=c["num_warps"], num_stages=c["num_stages"]))
    return [s for s in specs if not s["name"].startswith("qgemm_") or _chosen(s, "gemm", arch)]


# ---------------------------------------------------------------- launchers
def _check(x: torch.Tensor, w: QuantWeight) -> None:
    if x.dim() != 2 or x.shape[1] != w.k:
        raise ValueError(f"quant_matmul: x must be (M, {w.k}) for a {w.qtype} weight ({w.n_out}, {w.k}), "
                         f"got {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"quant_matmul: x must be float16 or bfloat16, got {x.dtype}")
    if x.stride(1) != 1 or x.device != w.q.device:
        raise ValueError("quant_matmul: x must be row-contiguous and on the weight's device")


def qgemm(x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
    """x (M, K) -> (M, N) in x's dtype, through the tensor-core GEMM kernel."""
    _check(x, w)
    m = x.shape[0]
    bm = next(b for b in _GEMM_BMS if m <= b or b == _GEMM_BMS[-1])  # larger M loops over BM tiles
    c = gemm_config(current_arch(x.device), w.qtype, bm)
    out = torch.empty(m, w.n_out, dtype=x.dtype, device=x.device)  # (M, N)
    grid = (triton.cdiv(m, bm) * triton.cdiv(w.n_out, c["BN"]),)
    _qgemm_kernel[grid](
        x, *w.planes(), out, m, w.n_out, w.n_groups, x.stride(0), out.stride(0), *plane_strides(w),
        QTYPE=qtype_code(w.qtype), NG=c["NG"], G=c["G"], BM=bm, BN=c["BN"], GROUP_M=c["GROUP_M"],
        num_warps=c["num_warps"], num_stages=c["num_stages"])
    return out


def quant_matmul(x: torch.Tensor, w: QuantWeight | torch.Tensor, qtype: str | None = None,
                 n_out: int | None = None, *, path: str | None = None,
                 bias: torch.Tensor | None = None, xq8: tuple | None = None) -> torch.Tensor:  # fmt: skip
    """x (M, K) fp16/bf16 @ W^T -> (M, N) in x's dtype.

    `w` is a QuantWeight (split once at load time with quant_layouts.split_planes) or raw GGUF bytes
    (N, row_bytes) uint8 with `qtype` and `n_out` (then split on every call: a copy of W).
    `path` forces "gemv_i8" | "gemv" | "gemm" | "dequant_mm"; by default `choose_path` decides.
    `bias` (N,) is added. `xq8`: quantize_act(x) when already computed (rmsnorm's quantize), used if the
    path is the integer-dot GEMV."""
    if not isinstance(w, QuantWeight):
        if qtype is None or n_out is None:
            raise ValueError("quant_matmul: raw weight bytes need qtype= and n_out=")
        w = _split_planes(w, qtype, n_out, x.shape[1])
    _check(x, w)
    path = path or choose_path(x.shape[0], current_arch(x.device), w.qtype)
    if path == "gemv":  # the bias is added in fp32 by its split-K reduce
        return qgemv(x, w, bias=bias)
    if path == "gemv_i8":
        if xq8 is not None:
            return qgemv_i8_quantized(xq8, w, x.dtype, bias=bias)
        return qgemv_i8(x, w, bias=bias)
    if path == "gemm":
        y = qgemm(x, w)
    elif path == "dequant_mm":
        y = x @ dequantize_planes(w, x.dtype).T
    else:
        raise ValueError(f"quant_matmul: path must be gemv_i8, gemv, gemm or dequant_mm, got {path!r}")
    return y if bias is None else y + bias
