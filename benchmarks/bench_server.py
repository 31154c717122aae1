"""A bounded load run of the OpenAI server on loopback: requests/s, TTFT p50/p99, output tok/s.

    python benchmarks/bench_server.py [--requests 64] [--concurrency 8] [--max-tokens 16] [--out FILE]

The server (uvicorn, in this process, 127.0.0.1 only) serves SmolLM2 on CPU; N streaming chat
requests are sent by `concurrency` async workers with the `openai` client (greedy, ignore_eos, so
every request makes exactly max_tokens tokens). Baseline in the same run: the same prompts through
`LLM.generate`-style offline batching on the same engine (no HTTP), all at once.

    output tok/s = sum(completion_tokens) / wall seconds      TTFT = first content chunk - request sent
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import threading
import time
from pathlib import Path

import torch


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _load(base: str, prompts: list[str], concurrency: int, max_tokens: int):
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=3600)
    todo = list(enumerate(prompts))
    ttfts, tokens = [], 0

    async def worker():
        nonlocal tokens
        while todo:
            _, p = todo.pop()
            t0 = time.perf_counter()
            first = None
            msgs = [{"role": "user", "content": p}]
            stream = await client.chat.completions.create(
                model="smollm2", messages=msgs, max_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})  # fmt: skip
            async for ch in stream:
                if first is None and ch.choices and ch.choices[0].delta.content:
                    first = time.perf_counter() - t0
                if ch.usage is not None:
                    tokens += ch.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return wall, ttfts, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    a = ap.parse_args()

    import uvicorn

    from rocmforge import LLM, SamplingParams
    from rocmforge.server.app import create_app

    llm = LLM("smollm2", device="cpu", max_model_len=512, kv_cache_tokens=16384, seed=0)
    topics = ["the sea", "a cat", "Paris", "music", "winter", "a robot", "tea", "the moon"]
    prompts = [f"Write one sentence about {topics[i % len(topics)]} (#{i})." for i in range(a.requests)]

    # baseline: the same requests, offline, all in one batch on the same engine
    sp = SamplingParams(temperature=0, max_tokens=a.max_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], sp)
    base_wall = time.perf_counter() - t0
    base_tokens = sum(len(o.outputs[0].token_ids) for o in outs)

    app = create_app(llm, model_name="smollm2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    wall, ttfts, tokens = asyncio.run(_load(f"http://127.0.0.1:{port}", prompts, a.concurrency, a.max_tokens))
    stats = app.state.runtime.engine.stats
    srv.should_exit = True
    th.join(30)

    machine = f"{_cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    lines = [
        f"# Server load run on CPU (SmolLM2-135M Q4_1, float32)\n\nMachine: {machine}.\n",
        f"{a.requests} streaming chat requests, concurrency {a.concurrency}, {a.max_tokens} new tokens each "
        f"(greedy, ignore_eos), loopback HTTP via the `openai` async client.\n",
        "| run | wall s | requests/s | output tok/s | TTFT p50 s | TTFT p99 s |",
        "|---|---|---|---|---|---|",
        f"| server (HTTP, concurrency {a.concurrency}) | {wall:.1f} | {a.requests / wall:.2f} | "
        f"{tokens / wall:.1f} | {statistics.median(ttfts):.2f} | {_pct(ttfts, 0.99):.2f} |",
        f"| baseline: offline `LLM.chat`, all {a.requests} at once | {base_wall:.1f} | "
        f"{a.requests / base_wall:.2f} | {base_tokens / base_wall:.1f} | - | - |",
        f"\nMost requests running in one step: {stats.max_running}; engine steps: {stats.steps}. "
        "output tok/s = sum(completion_tokens) / wall.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
