"""The integer-dot GEMV (quant_gemv_i8) against the fp32-lane GEMV (quant_gemv) in the same run.

    effective GB/s = quantized weight bytes (all planes) / time

Baselines measured here: the fp32-lane v2 GEMV, the BM=16 tensor-core GEMM (M > 1), dequantize +
cuBLAS bf16 (M = 1, 8), a device-to-device copy
(read + write counted) and a read-only pass (torch.sum over 2 GiB, bytes read / time). The i8 time
includes quantizing x (quantize_act) unless the column says "pre-quantized". Weights rotate past
L2 and every set of calls is one CUDA-graph replay (bench_quant_matmul.graph_time).
Run: PYTHONPATH=. python3 benchmarks/bench_gemv_i8.py [--sweep] [--out DIR] [--qtypes Q4_K,...]
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
import triton
from bench_quant_matmul import copy_bandwidth, graph_time, weights

from rocmforge.kernels.arch import current_arch
from rocmforge.kernels.dequant import dequantize_planes
from rocmforge.kernels.quant_gemv import qgemv
from rocmforge.kernels.quant_gemv_i8 import gemv_i8_config, qgemv_i8, qgemv_i8_quantized
from rocmforge.kernels.quant_matmul import choose_path, qgemm
from rocmforge.kernels.quantize_act import quantize_act

SHAPES = [(14336, 4096), (4096, 4096), (4096, 14336)]
# the Llama-3-8B decode GEMVs: fused gate_up, ffn_down, attn_output / q, fused q+k, k / v
SWEEP_SHAPES = [(28672, 4096), (4096, 14336), (4096, 4096), (5120, 4096), (1024, 4096)]
CONFIGS = [(8, 8, 2), (16, 8, 4), (8, 4, 1), (4, 8, 1), (8, 16, 2), (16, 4, 2)]  # BN, NC, warps


def read_bandwidth(nbytes: int = 2 << 30) -> float:
    a = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    for _ in range(3):
        a.sum()
    return nbytes / graph_time([lambda: a.sum()] * 3, reps=5)


def _us(fn, ws, x) -> float:
    return graph_time([lambda w=w: fn(x, w) for w in ws]) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qtypes", default="Q4_K,Q6_K,Q8_0,Q5_K,Q4_0")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true", help="the sweep, not the default-config table")
    ap.add_argument("--shapes", default=None, help="sweep shapes NxK,... (default: SWEEP_SHAPES)")
    ap.add_argument("--configs", default=None, help="sweep configs BN/NC/warps,... (default: CONFIGS)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = torch.cuda.get_device_name()
    copy, read = copy_bandwidth(), read_bandwidth()
    lines = [f"# integer-dot GEMV on {dev} ({datetime.date.today()})", "",
             f"torch {torch.__version__}, triton {triton.__version__}. "
             f"Copy (read + write) {copy / 1e9:.0f} GB/s, "
             f"read-only (torch.sum, 2 GiB) {read / 1e9:.0f} GB/s, both measured in this run.", ""]
    if a.sweep:
        lines += ["## i8 config sweep, M = 1, x pre-quantized", "",
                  "| qtype | N×K | BN | NC | warps | µs | GB/s | % read |",
                  "|---|---|---|---|---|---|---|---|"]
        shapes = [tuple(map(int, t.split("x"))) for t in a.shapes.split(",")] if a.shapes else SWEEP_SHAPES
        configs = CONFIGS
        if a.configs:
            configs = [tuple(map(int, t.split("/"))) for t in a.configs.split(",")]
        for qt in a.qtypes.split(","):
            for n, k in shapes:
                ws = weights(qt, n, k)
                xq = quantize_act(torch.randn(1, k, device="cuda", dtype=torch.bfloat16))
                x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
                t = _us(lambda x, w: qgemv(x, w), ws, x)
                gbs = ws[0].nbytes / t / 1e3
                lines.append(f"| {qt} | {n}×{k} | fp32-lane GEMV (default config) | | | {t:.1f} | "
                             f"{gbs:.0f} | {gbs * 1e9 / read:.0%} |")
                print(lines[-1], flush=True)
                for bn, nc, nw in configs:
                    cfg = dict(BN=bn, NC=nc, num_warps=nw, num_stages=1)
                    def fn(x, w, cfg=cfg):
                        return qgemv_i8_quantized(x, w, torch.bfloat16, config=cfg)
                    t = _us(fn, ws, xq)
                    gbs = ws[0].nbytes / t / 1e3
                    lines.append(f"| {qt} | {n}×{k} | {bn} | {nc} | {nw} | {t:.1f} | {gbs:.0f} | "
                                 f"{gbs * 1e9 / read:.0%} |")
                    print(lines[-1], flush=True)
                del ws
        lines.append("")
        if a.sweep_only:
            _write(lines, a.out)
            return 0
    lines += ["## Default configs", "",
              "| qtype | N×K | M | i8 µs | i8 GB/s | % read | i8 pre-quantized µs | fp32-lane GEMV µs | "
              "GEMM BM=16 µs | dequant+cuBLAS µs | i8 speed-up vs lane / vs dequant+cuBLAS | default path |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for qt in a.qtypes.split(","):
        for n, k in SHAPES:
            ws = weights(qt, n, k)
            for m in (1, 2, 4, 8):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                t8 = _us(lambda x, w: qgemv_i8(x, w), ws, x)
                tq = _us(lambda x, w: qgemv_i8_quantized(x, w, torch.bfloat16), ws, quantize_act(x))
                tl_ = _us(lambda x, w: qgemv(x, w), ws, x)
                tg = td = float("nan")  # the GEMM at M > 1; dequant + cuBLAS at M = 1 and 8
                if m > 1:
                    tg = _us(lambda x, w: qgemm(x, w), ws, x)
                if m in (1, 8):
                    td = _us(lambda x, w: x @ dequantize_planes(w, torch.bfloat16).T, ws[:2], x)
                gbs = ws[0].nbytes / t8 / 1e3
                path = choose_path(m, current_arch(), qt)
                lines.append(f"| {qt} | {n}×{k} | {m} | {t8:.1f} | {gbs:.0f} | {gbs * 1e9 / read:.0%} | "
                             f"{tq:.1f} | {tl_:.1f} | {tg:.1f} | {td:.1f} | {tl_ / t8:.2f}× / {td / t8:.2f}× "
                             f"| {path} |")
                print(lines[-1], flush=True)
    x = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)
    tq = graph_time([lambda: quantize_act(x)] * 20) * 1e6
    lines += ["", f"quantize_act alone, 1×14336 bf16: {tq:.1f} µs per call "
                  "(graph-timed, 20 calls per replay).",
              f"Default i8 config at M=1 (Q4_K): {gemv_i8_config(current_arch(), 'Q4_K')}."]
    _write(lines, a.out)
    return 0


def _write(lines: list[str], out: str | None) -> None:
    text = "\n".join(lines) + "\n"
    if out:
        with open(f"{out}/gemv_i8.md", "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
