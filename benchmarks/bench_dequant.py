"""CPU dequantization speed: rocmforge's vectorized torch vs gguf-py's numpy, on the real models.

For every quant type in each model, all its tensors (large ones cut to their first rows so a type
costs at most --max-mb of quantized bytes) are dequantized by both, best of --reps runs each:

    GB/s in  = quantized bytes read / time           GB/s out = 4 · elements written / time

Both run in this process on the same bytes (the file's mmap, already paged in by a warm-up run),
so the ratio is robust to the machine's load even where the absolute figures are not. F32 rows
compare unlike work: gguf-py returns a view of the bytes, we return a copy (a tensor the caller
owns, never backed by the read-only mmap).

    python benchmarks/bench_dequant.py [--models smollm2 gemma3 qwen2.5-coder] [--threads N]
                                       [--clock wall|cpu] [--max-mb 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch
from gguf import quants

from rocmforge.gguf import GGUFFile, dequantize
from rocmforge.hub import resolve_model


def _best(fn, reps: int, clock) -> float:
    fn()  # warm-up: pages the mmap in, allocator settles
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def _work(f: GGUFFile, names: list[str], max_bytes: int) -> list[tuple[np.ndarray, int, tuple[int, int]]]:
    """(raw (rows, row_bytes), qtype id, (rows, cols)) per tensor, cut to max_bytes in all."""
    out, left = [], max_bytes
    for name in names:
        t = f.tensors[name]
        cols = t.shape[-1]
        rows = t.n_elements // cols
        row_bytes = t.nbytes // rows
        take = max(1, min(rows, left // row_bytes))
        out.append((f.raw(name).reshape(rows, row_bytes)[:take], t.qtype, (take, cols)))
        left -= take * row_bytes
        if left <= 0:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3", "qwen2.5-coder"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-mb", type=float, default=32.0, help="quantized MB per (model, type)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time: honest on a shared, loaded machine (with --threads 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; gguf-py numpy (1 thread); "
          f"{args.clock} clock, best of {args.reps}")
    print(f"{'model':14} {'type':6} {'MB in':>7} {'ours GB/s in':>13} {'out':>6} "
          f"{'gguf-py GB/s in':>16} {'out':>6} {'speedup':>8}")
    tot_ours = tot_ref = tot_bytes = 0.0
    for model in args.models:
        f = GGUFFile(resolve_model(model))
        by_type = collections.defaultdict(list)
        for t in f.tensors.values():
            by_type[t.qtype_name].append(t.name)
        for qname, names in sorted(by_type.items()):
            work = _work(f, names, int(args.max_mb * 1e6))
            nin = sum(r.nbytes for r, _, _ in work)
            nout = 4 * sum(s[0] * s[1] for _, _, s in work)
            t_ours = _best(lambda w=work: [dequantize(r, q, s) for r, q, s in w], args.reps, clock)
            t_ref = _best(lambda w=work: [quants.dequantize(r, q) for r, q, _ in w], args.reps, clock)
            tot_ours, tot_ref, tot_bytes = tot_ours + t_ours, tot_ref + t_ref, tot_bytes + nin
            print(f"{model:14} {qname:6} {nin / 1e6:7.1f} {nin / t_ours / 1e9:13.3f} "
                  f"{nout / t_ours / 1e9:6.2f} {nin / t_ref / 1e9:16.3f} {nout / t_ref / 1e9:6.2f} "
                  f"{t_ref / t_ours:7.1f}x", flush=True)
    print(f"all: ours {tot_bytes / tot_ours / 1e9:.3f} GB/s in, gguf-py {tot_bytes / tot_ref / 1e9:.3f} "
          f"GB/s in, speedup {tot_ref / tot_ours:.1f}x")


if __name__ == "__main__":
    main()
