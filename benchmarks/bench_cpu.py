"""CPU benchmark: SmolLM2-135M (Q4_1 GGUF) prefill and decode throughput with 2 torch threads.

    prefill tok/s = 512 prompt tokens / time of the step that runs them (one forward + one sample)
    decode  tok/s = 128 / time of 128 single-token steps (greedy, ignore_eos, after a 16-token prompt,
                    like llama-bench's tg128)

Medians of --runs runs, each with a fresh prompt (the prefix cache never hits). Baselines: HF
transformers on the same GGUF (dequantized to float32, eager, same threads) measured in this
process; llama.cpp's figures on this machine quoted from issue 3 (not measured here). With
--profile, torch.profiler tables of one prefill and one decode step show where the time goes.

    .venv/bin/python benchmarks/bench_cpu.py [--runs 3] [--threads 2] [--no-hf] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge import LLM, SamplingParams  # noqa: E402

LLAMA_CPP = {"prefill": 312.0, "decode": 136.0}  # tok/s, quoted from issue 3 for this machine
TARGET = {"prefill": 150.0, "decode": 40.0}
PROMPT_LEN, DECODE_LEN, THREADS = 512, 128, 2


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        line = next(line for line in out.splitlines() if line.startswith("Model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def prompt_ids(llm: LLM, n: int, run: int) -> list[int]:
    """n real-text tokens, different for every run (so no prefix-cache hit)."""
    text = " ".join(f"Paragraph {run}: the brown fox number {i} jumps over the dog." for i in range(200))
    ids = llm.tokenize(text)
    assert len(ids) >= n, len(ids)
    return ids[:n]


def time_request(llm: LLM, ids: list[int], max_tokens: int) -> list[float]:
    """Wall time of every engine step of one greedy request: [prefill step, decode step, ...]."""
    eng = llm.engine
    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    rid = eng.add_request(ids, sp)
    times = []
    try:
        while eng.has_unfinished():
            t0 = time.perf_counter()
            eng.step()
            times.append(time.perf_counter() - t0)
    finally:
        eng.abort(rid)
    return times


def bench_ours(llm: LLM, runs: int) -> dict[str, float]:
    time_request(llm, prompt_ids(llm, 64, -1), 4)  # warm-up
    pre, dec = [], []
    for r in range(runs):
        pre.append(PROMPT_LEN / time_request(llm, prompt_ids(llm, PROMPT_LEN, r), 1)[0])
        steps = time_request(llm, prompt_ids(llm, 16, 100 + r), DECODE_LEN + 1)[1:]
        dec.append(len(steps) / sum(steps))
    return {"prefill": statistics.median(pre), "decode": statistics.median(dec)}


def bench_hf(path: Path, runs: int) -> dict[str, float] | None:
    import warnings

    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    warnings.filterwarnings("ignore", category=FutureWarning)  # past_key_values naming churn in 5.x
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    pre, dec = [], []
    with torch.inference_mode():
        model(torch.randint(0, V, (1, 32), generator=g))  # warm-up
        for _ in range(runs):
            x = torch.randint(0, V, (1, PROMPT_LEN), generator=g)
            t0 = time.perf_counter()
            model(x)
            pre.append(PROMPT_LEN / (time.perf_counter() - t0))
            x = torch.randint(0, V, (1, 16), generator=g)
            t0 = time.perf_counter()
            out = model(x, use_cache=True)
            t1 = time.perf_counter()
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            for _ in range(DECODE_LEN):
                out = model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            dec.append(DECODE_LEN / (time.perf_counter() - t1))
    return {"prefill": statistics.median(pre), "decode": statistics.median(dec)}


def profile(llm: LLM, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    eng, parts = llm.engine, []
    for name, n, steps in (("prefill (512 tokens, one step)", PROMPT_LEN, 1), ("decode (16 steps)", 16, 17)):
        rid = eng.add_request(prompt_ids(llm, n, 999 + n), SamplingParams(temperature=0, max_tokens=steps,
                                                                          ignore_eos=True))  # fmt: skip
        if steps > 1:
            eng.step()  # the prefill, outside the decode profile
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            while eng.has_unfinished():
                eng.step()
        eng.abort(rid)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        parts.append(f"### {name}\n\n```\n{table}\n```\n")
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="skip the HF transformers baseline")
    ap.add_argument("--profile", action="store_true", help="add torch.profiler tables (also when short)")
    ap.add_argument("--threads", type=int, default=THREADS, help=f"torch threads ({THREADS}, the reference)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_smollm2.md"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    llm = LLM("smollm2", device="cpu", max_model_len=2048, kv_cache_tokens=4096)
    load_s = time.perf_counter() - t0
    ours = bench_ours(llm, a.runs)
    print(f"rocmforge: {ours}", file=sys.stderr)
    hf = None if a.no_hf else bench_hf(llm.path, a.runs)
    print(f"HF transformers: {hf}", file=sys.stderr)
    load = os.getloadavg()[0]
    lines = [
        "# CPU benchmark: SmolLM2-135M-Instruct Q4_1",
        "",
        f"Machine: {cpu_name()}, {a.threads} torch threads (torch {torch.__version__}); "
        f"1-minute load average during the run {load:.1f} (other processes share the cores).",
        f"Model load (dequantize to float32): {load_s:.1f} s. Medians of {a.runs} runs.",
        f"Prefill: one {PROMPT_LEN}-token prompt, one step. "
        f"Decode: {DECODE_LEN} greedy steps after a 16-token prompt.",
        "",
        "| | prefill tok/s | decode tok/s |",
        "|---|---:|---:|",
        f"| rocmforge (torch CPU path, measured) | {ours['prefill']:.1f} | {ours['decode']:.1f} |",
    ]
    if hf:
        lines.append(f"| HF transformers float32 eager (measured, same process) | {hf['prefill']:.1f} | "
                     f"{hf['decode']:.1f} |")  # fmt: skip
    lines += [
        f"| llama.cpp (quoted from the issue, not measured here) | {LLAMA_CPP['prefill']:.0f} | "
        f"{LLAMA_CPP['decode']:.0f} |",
        f"| target | >= {TARGET['prefill']:.0f} | >= {TARGET['decode']:.0f} |",
        "",
    ]
    short = [k for k in TARGET if ours[k] < TARGET[k]]
    lines.append(f"Targets met: {'all' if not short else 'no: ' + ', '.join(short) + ' short'}.\n")
    if short or a.profile:
        lines += ["## Where the time goes (torch.profiler, self CPU time)", "", profile(llm)]
    report = "\n".join(lines)
    print(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(report + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
