"""Where a GPU prefill's time goes: ms and tok/s of one N-token prompt (max_tokens=1, median of 3) and
the kernel table of one such prefill (torch.profiler), sorted by GPU time, and its host hot spots
(cProfile).

Run: PYTHONPATH=. python3 benchmarks/profile_prefill.py MODEL.gguf [--tokens 512]
(`rocmforge bench --synthetic NAME` writes synthetic files of real shapes.) Needs a GPU.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rocmforge.llm import LLM
from rocmforge.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512, help="prompt tokens")
    a = ap.parse_args()
    llm = LLM(a.model, device="cuda", max_model_len=a.tokens + 16, kv_cache_tokens=4 * (a.tokens + 16))
    one = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    g = torch.Generator().manual_seed(0)
    vocab = llm.model_config.vocab_size

    def prefill() -> float:
        ids = torch.randint(0, vocab, (a.tokens,), generator=g).tolist()
        torch.cuda.synchronize()
        t = time.perf_counter()
        llm.generate([ids], one)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    prefill()  # warm-up: compiles the kernels
    runs = [prefill() for _ in range(5)]
    dt = statistics.median(runs)
    print(f"prefill {a.tokens}: {dt * 1e3:.2f} ms, {a.tokens / dt:.0f} tok/s (runs "
          f"{', '.join(f'{r * 1e3:.1f}' for r in runs)} ms)", flush=True)
    eng = llm.engine  # the forward alone, over blocks 0.. of the (now idle) cache: host vs GPU time
    nb = -(-a.tokens // eng.config.block_size)
    ids = torch.randint(0, vocab, (a.tokens,), generator=g).tolist()
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t = time.perf_counter()
        start.record()
        eng._forward([(ids, 0)], [list(range(nb))], eng.kv_caches, "last")
        end.record()
        host = time.perf_counter() - t
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        print(f"forward alone: host returns after {host * 1e3:.1f} ms, GPU {start.elapsed_time(end):.1f} ms, "
              f"wall {wall * 1e3:.1f} ms", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        prefill()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
    pr = cProfile.Profile()  # the host side: is the prefill launch-bound?
    pr.enable()
    prefill()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
