"""The integer-dot GEMV (quant_gemv_i8) against the fp32-lane GEMV (quant_gemv) in the same run.

    effective GB/s = quantized weight bytes (all planes) / time

Baselines measured here: the fp32-lane v2 GEMV, the BM=16 tensor-core GEMM (M > 1), dequantize +
cuBLAS bf16 (M = 1, 8), a device-to-device copy
(read + write counted) and a read-only pass (torch.sum over 2 GiB, bytes read / time). The i8 time
includes quantizing x (quantize_act) unless the column says "pre-quantized". Weights rotate past
L2 and every set of calls is one CUDA-graph replay (bench_quant_matmul.graph_time).
Run: PYTHONPATH=. python3 benchmarks/bench_gemv_i8.py [--sweep] [--out DIR] [--qtypes Q4_K,...]
(from benchmarks/; `--sweep --sweep-only --ms 1,2 --shapes NxK,... --configs BN/NC/warps/stages,...`
times tile configs only)
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
# BN, NC, warps, stages: the 2026-12-04 sweep's (gemv_i8_h200.md)
CONFIGS = [(1, 32, 1, 1), (1, 16, 1, 1), (2, 16, 1, 1), (2, 32, 2, 1), (1, 64, 2, 1), (2, 8, 1, 1),
           (4, 16, 2, 1)]


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
    ap.add_argument("--configs", default=None, help="sweep BN/NC/warps[/stages],... (default: CONFIGS)")
    ap.add_argument("--ms", default="1", help="sweep rows of x, e.g. 1,2,4,8")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="gemv_i8", help="the markdown file's name in --out")
    a = ap.parse_args()
    dev = torch.cuda.get_device_name()
    copy, read = copy_bandwidth(), read_bandwidth()
    lines = [f"# integer-dot GEMV on {dev} ({datetime.date.today()})", "",
             f"torch {torch.__version__}, triton {triton.__version__}. "
             f"Copy (read + write) {copy / 1e9:.0f} GB/s, "
             f"read-only (torch.sum, 2 GiB) {read / 1e9:.0f} GB/s, both measured in this run.", ""]
    if a.sweep:
        _sweep(lines, a, read)
        if a.sweep_only:
            _write(lines, a.out, a.name)
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
    _write(lines, a.out, a.name)
    return 0


def _sweep(lines: list[str], a, read: float) -> None:
    """i8 tile configs (x pre-quantized) against the lane GEMV and the default i8 config, per qtype,
    shape and M; every config's output checked against the default config's before it is timed."""
    lines += ["## i8 config sweep, x pre-quantized", "",
              "config: BN/NC/warps/stages of the i8 GEMV (`default`: gemv_i8_config).", "",
              "| qtype | N×K | M | kernel | config | µs | GB/s | % read |",
              "|---|---|---|---|---|---|---|---|"]
    shapes = [tuple(map(int, t.split("x"))) for t in a.shapes.split(",")] if a.shapes else SWEEP_SHAPES
    configs = [(*map(int, t.split("/")), 1)[:4] for t in a.configs.split(",")] if a.configs else CONFIGS

    def i8(xq, w, cfg=None):
        return qgemv_i8_quantized(xq, w, torch.bfloat16, config=cfg)

    for qt in a.qtypes.split(","):
        for n, k in shapes:
            ws = weights(qt, n, k)
            for m in map(int, a.ms.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                xq = quantize_act(x)
                head, nb = f"| {qt} | {n}×{k} | {m} |", ws[0].nbytes
                _put(lines, head, "fp32-lane GEMV | default", nb, _us(lambda x, w: qgemv(x, w), ws, x), read)
                _put(lines, head, "i8 GEMV | default", nb, _us(i8, ws, xq), read)
                ref = i8(xq, ws[0]).float()
                for bn, nc, nw, st in configs:
                    cfg = dict(BN=bn, NC=nc, num_warps=nw, num_stages=st)
                    err = ((i8(xq, ws[0], cfg).float() - ref).norm() / ref.norm()).item()
                    t = _us(lambda x, w, cfg=cfg: i8(x, w, cfg), ws, xq)
                    _put(lines, head, f"i8 GEMV | {bn}/{nc}/{nw}/{st} err {err:.0e}", nb, t, read)
            del ws
    lines.append("")


def _put(lines: list[str], head: str, what: str, nbytes: int, t: float, read: float) -> None:
    gbs = nbytes / t / 1e3
    lines.append(f"{head} {what} | {t:.1f} | {gbs:.0f} | {gbs * 1e9 / read:.0%} |")
    print(lines[-1], flush=True)


def _write(lines: list[str], out: str | None, name: str) -> None:
    text = "\n".join(lines) + "\n"
    if out:
        with open(f"{out}/{name}.md", "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
