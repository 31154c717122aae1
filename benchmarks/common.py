"""Timing helpers shared by the benchmarks: HBM (not L2) bandwidth, medians, CUDA-graph timing.

- `rotations(bytes_per_set)`: how many independent input sets to cycle through so the working set is
  more than 2.5x the L2 (60 MB on an H200), so every timed call reads from HBM.
- `time_ms(fn, graph=...)`: median milliseconds by `triton.testing.do_bench`, or by
  `do_bench_cudagraph` (launch gaps removed: use it for kernels of a few microseconds).
- `copy_bandwidth()`: device-to-device copy of a 1 GiB buffer, bytes read + written over time: the
  practical HBM ceiling to quote kernels against.
"""

from __future__ import annotations

import math

import torch
import triton


def l2_bytes() -> int:
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20))


def rotations(bytes_per_set: int, factor: float = 2.5) -> int:
    """Number of input sets whose total exceeds `factor` x L2."""
    return max(1, math.ceil(factor * l2_bytes() / max(1, bytes_per_set)))


def cycle(fn, sets):
    """A callable that runs fn(*s) for every input set s in turn (time / len(sets) = one call)."""

    def run():
        for s in sets:
            fn(*s)

    return run


def time_ms(fn, *, graph: bool = False, rep: int = 100) -> float:
    """Median ms of fn() (warm: call it once first so compilation stays out)."""
    fn()
    torch.cuda.synchronize()
    if graph:
        return float(triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median"))
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))


def copy_bandwidth(nbytes: int = 2**30) -> float:
    """Bytes/s of dst.copy_(src), counting the read and the write."""
    src = torch.randn(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3)


def device_line() -> str:
    p = torch.cuda.get_device_properties(0)
    return (f"{p.name}, {p.multi_processor_count} SMs, L2 {l2_bytes() / 2**20:.0f} MiB, "
            f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}")
