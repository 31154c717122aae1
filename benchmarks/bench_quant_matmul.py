"""Fused GGUF dequant-matmul on the GPU at decode batch sizes: GB/s with baselines from the same run.

    effective GB/s = quantized weight bytes (all planes) / time     (vs a device-to-device copy: read + write)

Baselines: the v1 GEMV (benchmarks/gemv_v1.py), dequantize + cuBLAS (x @ W_bf16^T), and the BM=16
tensor-core GEMM. Weights are random valid blocks (speed does not depend on values), rotated over
enough copies (> 4 × the 60 MB L2) that every timed call reads its weight from HBM; each set of
calls is timed as one CUDA-graph replay (launch gaps removed), median of 15 replays.
Run: PYTHONPATH=. python3 benchmarks/bench_quant_matmul.py [--sweep] [--out DIR] [--qtypes Q4_0,...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys

import torch
import triton
from gemv_v1 import qgemv_v1

from rocmforge.kernels.arch import make_arch
from rocmforge.kernels.dequant import dequantize_planes
from rocmforge.kernels.quant_gemv import gemv_config
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, random_blocks, row_bytes, split_planes
from rocmforge.kernels.quant_matmul import qgemm, qgemv

SHAPES = [(14336, 4096), (4096, 4096)]  # (N_out, K)
BATCHES = [1, 2, 4, 8]
L2_BUST = 240e6  # bytes of distinct weights per timed graph


def graph_time(calls, reps: int = 15) -> float:
    """Median seconds of one call in `calls` (list of thunks), replayed as one CUDA graph."""
    for c in calls:
        c()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / len(calls))
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 4 << 30) -> float:
    """Bytes read + written per second by a 4 GiB device-to-device copy (8.6 GB moved per copy)."""
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    for _ in range(5):  # NOTE: lets the clocks ramp up from idle before timing
        b.copy_(a)
    return 2 * nbytes / graph_time([lambda: b.copy_(a)] * 3, reps=5)


def weights(qtype: str, n: int, k: int):
    copies = max(2, int(L2_BUST // (n * row_bytes(qtype, k))) + 1)
    raw = random_blocks(qtype, n, k, torch.Generator().manual_seed(0)).cuda()
    return [split_planes(raw.clone(), qtype, n, k) for _ in range(copies)]


def _us(fn, ws, x) -> float:
    return graph_time([lambda w=w: fn(x, w) for w in ws]) * 1e6


def bench_small(qtype, n, k, bw, rows):
    ws = weights(qtype, n, k)
    qbytes = ws[0].nbytes
    for m in BATCHES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        r = dict(qtype=qtype, n=n, k=k, m=m, gemv_us=float("nan"), v1_us=float("nan"), gemm_us=float("nan"),
                 dq_mm_us=float("nan"))
        r["gemv_us"] = _us(qgemv, ws, x)
        if m == 1:
            r["v1_us"] = _us(qgemv_v1, ws, x)
        if m == 8:
            r["gemm_us"] = _us(qgemm, ws, x)
        if m == 1:
            r["dq_mm_us"] = _us(lambda x, w: x @ dequantize_planes(w, torch.bfloat16).T, ws[:4], x)
        r["gbps"] = qbytes / r["gemv_us"] * 1e-3
        r["pct_copy"] = 100 * qbytes / (r["gemv_us"] * 1e-6) / bw
        rows.append(r)
        print(r, file=sys.stderr, flush=True)
    del ws


SWEEP = [(32, 64, 4, 1), (64, 32, 4, 1), (16, 64, 2, 1), (32, 64, 8, 1), (16, 32, 4, 1), (32, 64, 4, 2),
         (64, 64, 4, 1)]


def sweep(bw, qtypes) -> list[str]:
    """GEMV configs at M=1: rows per program BN, words per step NW, warps, stages; split-K on 4096²."""
    out = [f"copy {bw / 1e9:.0f} GB/s",
           "| qtype | N×K | BN | NW | warps | stages | split | µs | GB/s | % copy |", "|---" * 10 + "|"]
    for q in qtypes:
        for n, k in SHAPES:
            ws = weights(q, n, k)
            x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
            cfgs = [(c, None) for c in SWEEP] if n == 14336 else \
                [(c, s) for c in SWEEP[:3] for s in (1, 2, 4)]
            for (bn, nw, nwarps, ns), split in cfgs:
                c = dict(BN=bn, NW=nw, num_warps=nwarps, num_stages=ns)
                t = graph_time([lambda w=w, c=c, s=split, x=x: qgemv(x, w, split_k=s, config=c) for w in ws])
                gbs = ws[0].nbytes / t
                out.append(f"| {q} | {n}×{k} | {bn} | {nw} | {nwarps} | {ns} | {split or 'auto'} | "
                           f"{t * 1e6:.1f} | {gbs / 1e9:.0f} | {100 * gbs / bw:.0f}% |")
                print(out[-1], flush=True)
            del ws
    return out


def markdown(rows, bw, meta) -> str:
    cfg = gemv_config(make_arch("cuda", 90, 32), "Q4_0")
    out = [f"# quant_matmul on {meta['device']} ({meta['date']})", "",
           f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}. Device copy bandwidth "
           f"(read + write, 4 GiB buffers) measured in this run: **{bw / 1e9:.0f} GB/s**. "
           f"GEMV config at M=1: {cfg}.", "",
           "## Small batch (bf16 x, CUDA-graph timed, weights rotated past L2)", "",
           "GB/s = quantized weight bytes / GEMV time; % = of the copy bandwidth; "
           "speed-up = dequant+cuBLAS / GEMV.", "",
           "| qtype | N×K | M | GEMV µs | GB/s | % copy | v1 GEMV µs | GEMM(BM=16) µs | dequant+cuBLAS µs "
           "| speed-up |", "|---" * 10 + "|"]
    for r in rows:
        su = f"{r['dq_mm_us'] / r['gemv_us']:.1f}×" if r["m"] == 1 else ""
        out.append(f"| {r['qtype']} | {r['n']}×{r['k']} | {r['m']} | {r['gemv_us']:.1f} | {r['gbps']:.0f} | "
                   f"{r['pct_copy']:.0f}% | {r['v1_us']:.1f} | {r['gemm_us']:.1f} | {r['dq_mm_us']:.1f} "
                   f"| {su} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="folder for quant_matmul_h200.md / .json / sweep.md")
    ap.add_argument("--qtypes", default=",".join(QTYPE_NAMES))
    ap.add_argument("--sweep", default="", help="comma list of qtypes to sweep GEMV configs for first")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_quant_matmul: needs a CUDA/ROCm GPU")
        return 1
    meta = dict(device=torch.cuda.get_device_name(), date=datetime.date.today().isoformat(),
                torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda)
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    if args.sweep:
        text = "\n".join(sweep(bw, args.sweep.split(",")))
        if args.out:
            with open(f"{args.out}/sweep.md", "w") as f:
                f.write(text + "\n")
    rows: list[dict] = []
    for q in (args.qtypes.split(",") if args.qtypes else []):
        for n, k in SHAPES:
            bench_small(q, n, k, bw, rows)
        md = markdown(rows, bw, meta)
        if args.out:  # NOTE: rewritten after every qtype, so a run cut short still leaves its table
            with open(f"{args.out}/quant_matmul_h200.md", "w") as f:
                f.write(md)
            with open(f"{args.out}/quant_matmul_h200.json", "w") as f:
                json.dump(dict(meta=meta, copy_bw=bw, rows=rows), f, indent=1)
    print(markdown(rows, bw, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
