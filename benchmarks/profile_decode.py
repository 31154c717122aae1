"""Where a GPU decode step's time goes: ms/step eager vs CUDA graphs, the kernel table of eager
steps (torch.profiler) and the host-side hot spots of graph steps (cProfile).

Run: PYTHONPATH=. python3 benchmarks/profile_decode.py MODEL.gguf [--steps 50]
(`rocmforge bench --synthetic NAME` writes synthetic files of real shapes.) Needs a GPU.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rocmforge.llm import LLM
from rocmforge.sampling_params import SamplingParams


def step_time(eng, steps: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        eng.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per mode (at most ~300)")
    a = ap.parse_args()
    for eager in (True, False):
        llm = LLM(a.model, device="cuda", max_model_len=512, kv_cache_tokens=4096, enforce_eager=eager)
        greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
        llm.generate([[1, 2, 3, 4]], greedy)  # warm-up: compiles, captures
        eng = llm.engine
        rid = eng.add_request([5, 6, 7, 8], SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True))
        for _ in range(4):  # prefill + first decode steps
            eng.step()
        dt = step_time(eng, a.steps)
        print(f"{'eager' if eager else 'graphs'}: {dt * 1e3:.2f} ms/step, {1 / dt:.1f} tok/s "
              f"(decode-ahead steps used {eng.ahead_used}, dropped {eng.ahead_dropped})", flush=True)
        if eager:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step_time(eng, 10)
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25,
                                            max_name_column_width=60))  # fmt: skip
            pr = cProfile.Profile()  # eager host cost: what graphs hide
            pr.enable()
            step_time(eng, 10)
            pr.disable()
            pstats.Stats(pr).sort_stats("tottime").print_stats(20)
        else:
            graph = eng.graphs._graphs[1][0]  # the batch-1 decode graph alone: GPU time, no host step
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(a.steps):
                graph.replay()
            torch.cuda.synchronize()
            rt = (time.perf_counter() - t) / a.steps
            print(f"graph replay alone: {rt * 1e3:.3f} ms/step; the rest of a step (host, sampler, copies): "
                  f"{(dt - rt) * 1e3:.3f} ms", flush=True)
            pr = cProfile.Profile()
            pr.enable()
            step_time(eng, 30)
            pr.disable()
            pstats.Stats(pr).sort_stats("tottime").print_stats(18)
        eng.abort(rid)
        del llm, eng
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
