"""Paged decode attention at batch 1: the in-kernel split combine against a separate reduce launch.

TB/s = K/V bytes / time (GQA 32q/8kv, D=128, bf16, scattered pages), CUDA graph over caches > 2.5x L2,
as bench_kernels.py. "in-kernel": the last split to arrive combines (CH splits a step); "separate":
the combine in its own launch (paged_decode.separate_combine).
Run: PYTHONPATH=. python3 benchmarks/decode_probe.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks.bench_kernels import HKV, D, _decode_sets, _gather
from benchmarks.common import cycle, rotations, time_ms
from rocmforge.kernels.paged_decode import paged_decode_attention


def _case(lines, B, L, tiles, splits, variants):
    kv_bytes = B * L * HKV * D * 2 * 2
    n = min(rotations(kv_bytes), 64)
    kc, vc, perm, lens, qs = _decode_sets(B, L, n)
    ref = F.scaled_dot_product_attention(qs[0][:, :, None], _gather(kc, perm[0], L),
                                         _gather(vc, perm[0], L), enable_gqa=True)[:, :, 0].float()
    sets = [(qs[i], perm[i]) for i in range(n)]

    def fn(q, bt, s, c):
        return paged_decode_attention(q, kc, vc, bt, lens, scale=D**-0.5, num_splits=s, config=c)

    for bn, nw, st in tiles:
        for s in splits if B == 1 else (8, 16):
            cfg = dict(BLOCK_N=bn, num_warps=nw, num_stages=st)
            for name, ch in variants:
                c = {**cfg, "SEPARATE": name == "separate", **({"CH": ch} if ch else {})}
                out = fn(*sets[0], s, c).float()
                err = ((out - ref).norm() / ref.norm()).item()
                t = time_ms(cycle(fn, [(*x, s, c) for x in sets]), graph=True) / n
                lines.append(f"| B{B} L{L // 1024}k | {name} | {bn}/{nw}/{st} | {s} | {ch or 'default'} "
                             f"| {t * 1e3:.1f} | {kv_bytes / t / 1e9:.2f} | {err:.1e} |")
                print(lines[-1], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--cases", default="1x4096,1x1024,1x16384,8x4096", help="BxL,...")
    ap.add_argument("--tiles", default="32/4/3,64/4/3,64/4/2", help="BLOCK_N/warps/stages,...")
    ap.add_argument("--splits", default="16,32,64", help="split counts at B1")
    ap.add_argument("--variants", default="in,in4,in16,sep", help="in (default CH), inN (CH=N), sep")
    a = ap.parse_args()
    tiles = [tuple(map(int, t.split("/"))) for t in a.tiles.split(",")]
    splits = [int(t) for t in a.splits.split(",")]
    variants = [("separate", None) if v == "sep" else ("in-kernel", int(v[2:]) if v[2:] else None)
                for v in a.variants.split(",")]
    torch.manual_seed(0)
    lines = [f"# decode probe on {torch.cuda.get_device_name()}", "",
             "| case | variant | tile BLOCK_N/warps/stages | splits | CH | µs | TB/s | rel err |",
             "|---|---|---|---|---|---|---|---|"]
    for B, L in (tuple(map(int, c.split("x"))) for c in a.cases.split(",")):
        _case(lines, B, L, tiles, splits, variants)
    if a.out:
        with open(f"{a.out}/decode_probe.md", "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
