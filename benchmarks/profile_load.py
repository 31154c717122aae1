"""Where a load run's time goes: N concurrent requests (prompt P, output O tokens, greedy), every
engine step timed (a device sync after each, so decode-ahead is off in effect) and sorted by kind:
graph decode by batch size, eager (prefill or prefill mixed with decode), preemptions counted.

Run: PYTHONPATH=. python3 benchmarks/profile_load.py MODEL.gguf [-c 64 --prompt 512 --output 256]
(the shapes of `rocmforge bench -c 64 --load-prompt 512 --load-output 256`). Needs a GPU.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import torch

from rocmforge.llm import LLM
from rocmforge.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--output", type=int, default=256)
    a = ap.parse_args()
    per_req = -(-(a.prompt + a.output) // 16) * 16
    llm = LLM(a.model, device="cuda", max_model_len=a.prompt + a.output,
              kv_cache_tokens=a.concurrency * per_req + 16)
    eng, rng = llm.engine, random.Random(0)
    V = llm.model_config.vocab_size
    sp = SamplingParams(temperature=0.0, max_tokens=a.output, ignore_eos=True)
    for n_out in (4, a.output):  # warm-up (compiles, captures), then the measured run
        rids = [eng.add_request([rng.randrange(2, V) for _ in range(a.prompt)], sp)
                for _ in range(a.concurrency)]  # fmt: skip
        if n_out != a.output:
            for _ in range(n_out * 3):
                eng.step()
            for r in rids:
                eng.abort(r)
            continue
        steps = defaultdict(lambda: [0, 0.0, 0])  # kind -> [steps, seconds, tokens]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        while eng.has_unfinished():
            pre = eng.scheduler.num_preemptions
            t = time.perf_counter()
            eng.step()
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            running = len(eng.scheduler.running)
            kind = "graph decode" if eng.ran_graph else "eager"
            s = steps[f"{kind}, {running:>2} running" if kind != "eager" else "eager (prefill / mixed)"]
            s[0] += 1
            s[1] += dt
            if eng.scheduler.num_preemptions != pre:
                steps["preemptions"][0] += eng.scheduler.num_preemptions - pre
        wall = time.perf_counter() - t0
        print(f"{a.concurrency} x ({a.prompt} in, {a.output} out): {wall:.2f} s, "
              f"{a.concurrency * a.output / wall:.0f} output tok/s, "
              f"{a.concurrency * (a.prompt + a.output) / wall:.0f} incl. prompt")
        for k, (n, sec, _) in sorted(steps.items(), key=lambda kv: -kv[1][1]):
            print(f"  {k:<32} {n:>5} steps  {sec:7.3f} s  {1e3 * sec / max(n, 1):8.2f} ms/step")


if __name__ == "__main__":
    main()
