"""CPU benchmark: SmolLM2-135M (Q4_1 GGUF) prefill and decode throughput with 2 torch threads.

    prefill tok/s = 512 prompt tokens / time of the step that runs them (one forward + one sample)
    decode  tok/s = 128 / time of 128 single-token steps (greedy, ignore_eos, after a 16-token prompt,
                    like llama-bench's tg128)
    decode GB/s   = weight bytes read per decode step / step time (every projection and the head
                    once a step; the embedding lookup and KV reads are left out: under 1%)

Both weight paths run in this process: "packed" (load_model(weights="packed"): int4 / bf16 weights,
the CPU fast path) and "exact" (every weight dequantized to float32, the reference). Medians of
--runs runs, each with a fresh prompt (the prefix cache never hits). Baselines: HF transformers on
the same GGUF (dequantized to float32, eager, same threads) measured in this process; llama.cpp's
figures on this machine quoted from issue 3 (not measured here). The 1-minute load average is
printed before and after: on a shared box other processes' threads change every figure here. With
--profile, torch.profiler tables of one packed prefill and decode show where the time goes.

    .venv/bin/python benchmarks/bench_cpu.py [--runs 3] [--threads 2] [--no-hf] [--no-exact] [--profile]
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
from rocmforge.models import load_model  # noqa: E402

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


def use_weights(llm: LLM, weights: str) -> float:
    """Give llm's engine a model loaded with `weights` ("exact" / "packed"); returns the load seconds.
    NOTE: swapped in here because LLM(...) has no weights option yet; the engine keeps its KV cache."""
    t0 = time.perf_counter()
    llm.model = llm.engine.model = load_model(llm.gguf, llm.model_config, weights=weights)
    return time.perf_counter() - t0


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads: every projection / head tensor once (norm vectors and the embedding
    table are left out: a step reads one embedding row)."""
    skip = ("norm", "token_embd", "rope_freqs", "inv_freq")
    tensors = [*model.named_parameters(), *model.named_buffers()]
    total = sum(t.numel() * t.element_size() for n, t in tensors if not any(k in n for k in skip))
    if model._modules.get("output") is None:  # tied and exact: the head is the embedding table
        total += model.token_embd.weight.numel() * model.token_embd.weight.element_size()
    return total


def bench_ours(llm: LLM, runs: int, salt: int) -> dict[str, float]:
    """Medians over `runs`; `salt` keeps every prompt new to the engine's prefix cache (NOTE: a hit
    would skip the prefill and, after a model swap, reuse the other model's K/V)."""
    time_request(llm, prompt_ids(llm, 64, salt - 1), 4)  # warm-up
    pre, dec = [], []
    for r in range(runs):
        pre.append(PROMPT_LEN / time_request(llm, prompt_ids(llm, PROMPT_LEN, salt + r), 1)[0])
        steps = time_request(llm, prompt_ids(llm, 16, salt + 100 + r), DECODE_LEN + 1)[1:]
        dec.append(len(steps) / sum(steps))
    d = statistics.median(dec)
    return {"prefill": statistics.median(pre), "decode": d, "GB/s": weight_bytes(llm.model) * d / 1e9}


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
        rid = eng.add_request(prompt_ids(llm, n, 9999 + n), SamplingParams(temperature=0, max_tokens=steps,
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
    ap.add_argument("--no-exact", action="store_true", help="skip the exact float32 path")
    ap.add_argument("--profile", action="store_true", help="add torch.profiler tables (also when short)")
    ap.add_argument("--threads", type=int, default=THREADS, help=f"torch threads ({THREADS}, the reference)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_smollm2.md"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()[0]
    llm = LLM("smollm2", device="cpu", max_model_len=2048, kv_cache_tokens=4096)
    rows, loads = {}, {}
    for i, weights in enumerate(("packed",) if a.no_exact else ("packed", "exact")):
        loads[weights] = use_weights(llm, weights)
        rows[weights] = bench_ours(llm, a.runs, salt=1000 * (i + 1))
        print(f"rocmforge {weights}: {rows[weights]}", file=sys.stderr)
    hf = None if a.no_hf else bench_hf(llm.path, a.runs)
    print(f"HF transformers: {hf}", file=sys.stderr)
    load_after = os.getloadavg()[0]
    lines = [
        "# CPU benchmark: SmolLM2-135M-Instruct Q4_1",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {a.threads} torch threads "
        f"(torch {torch.__version__}); "
        f"1-minute load average {load_before:.1f} before the run, {load_after:.1f} after (other processes "
        f"share the cores when it is above 0).",
        "Model load: "
        + ", ".join(f"{w} {t:.1f} s" for w, t in loads.items())
        + f". Medians of {a.runs} runs.",
        f"Prefill: one {PROMPT_LEN}-token prompt, one step. "
        f"Decode: {DECODE_LEN} greedy steps after a 16-token prompt; "
        "GB/s = weight bytes per step / step time.",
        "",
        "| | prefill tok/s | decode tok/s | decode weight GB/s |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "packed": "rocmforge packed int4/bf16 weights (CPU fast path)",
        "exact": "rocmforge exact float32 weights",
    }
    for w, r in rows.items():
        lines.append(f"| {names[w]} (measured) | {r['prefill']:.1f} | {r['decode']:.1f} | {r['GB/s']:.1f} |")
    if hf:
        lines.append(f"| HF transformers float32 eager (measured, same process) | {hf['prefill']:.1f} | "
                     f"{hf['decode']:.1f} | |")  # fmt: skip
    lines += [
        f"| llama.cpp (quoted from the issue, not measured here) | {LLAMA_CPP['prefill']:.0f} | "
        f"{LLAMA_CPP['decode']:.0f} | |",
        f"| target | >= {TARGET['prefill']:.0f} | >= {TARGET['decode']:.0f} | |",
        "",
    ]
    short = [k for k in TARGET if rows["packed"][k] < TARGET[k]]
    met = "all" if not short else "no: " + ", ".join(short) + " short"
    lines.append(f"Targets met (packed path): {met}.\n")
    if short or a.profile:
        use_weights(llm, "packed")
        lines += ["## Where the time goes (packed path, torch.profiler, self CPU time)", "", profile(llm)]
    report = "\n".join(lines)
    print(report)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(report + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
