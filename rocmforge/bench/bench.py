"""`rocmforge bench`: llama-bench's pp / tg tests, a concurrent-load test, decode GB/s, an HF baseline.

    rocmforge bench -m MODEL                          a .gguf path or short name
    rocmforge bench --synthetic llama-3-8b-q4_k_m     random weights in that model's exact tensors
    rocmforge bench --synthetic smollm2-135m-q4_1 --synthetic-layers 2 -p 32 -n 8 -c 4 --device cpu --json
    rocmforge bench ... --baseline hf                 HF transformers (same shapes, random init) beside ours

Prints a table (llama-bench's columns) or, with --json, one JSON object: "model", "device",
"load_s", "pp", "tg", "load", "bandwidth", "baseline". How each figure is computed: measure.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from .measure import BenchConfig, EngineBench, copy_bandwidth, decode_bandwidth, model_weight_bytes
from .specs import SPECS

BLOCK = 16  # the engine's KV block size (EngineConfig.block_size)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to an argparse subparsers object; returns its parser."""
    b = subparsers.add_parser("bench", help="prefill / decode / load throughput (like llama-bench)")
    src = b.add_mutually_exclusive_group()
    src.add_argument("-m", "--model", default=None, help="a .gguf path or a short name (default: smollm2)")
    src.add_argument("--synthetic", default=None, choices=tuple(SPECS), metavar="NAME",
                     help=f"a random-weight GGUF of a real model's shapes: {', '.join(SPECS)}")
    b.add_argument("--synthetic-layers", type=int, default=None, metavar="K",
                   help="write the synthetic model with its first K layers only")
    b.add_argument("--synthetic-dir", default=None, help="synthetic file cache (default: "
                   "$ROCMFORGE_CACHE/synthetic, i.e. ~/.cache/rocmforge/synthetic)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("-p", "--n-prompt", type=int, default=512, metavar="P", help="pp test tokens (0: skip)")
    b.add_argument("-n", "--n-gen", type=int, default=128, metavar="N", help="tg test tokens (0: skip)")
    b.add_argument("-r", "--repetitions", type=int, default=3, help="runs per test; the median is shown")
    b.add_argument("-c", "--concurrency", type=int, default=4, help="load test requests (0: skip)")
    b.add_argument("--load-prompt", type=int, default=128, help="load test prompt tokens per request")
    b.add_argument("--load-output", type=int, default=128, help="load test output tokens per request")
    b.add_argument("--enforce-eager", action="store_true", help="GPU: no CUDA graphs for decode")
    b.add_argument("--batch-invariant", action="store_true",
                   help="the engine's batch-invariant mode (max_num_seqs = the load test's concurrency)")
    b.add_argument("--baseline", choices=("none", "hf"), default="none", help="hf: HF transformers too")
    b.add_argument("--copy-mib", type=int, default=None, help="copy-bandwidth buffer (1024 GPU, 128 CPU)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return b


def _check(a: argparse.Namespace) -> BenchConfig:
    for name in ("n_prompt", "n_gen", "concurrency", "load_prompt", "load_output"):
        if getattr(a, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(a, name)}")
    if a.repetitions < 1:
        raise ValueError(f"--repetitions must be >= 1, got {a.repetitions}")
    if a.concurrency and (a.load_prompt < 1 or a.load_output < 1):
        raise ValueError("the load test needs --load-prompt and --load-output >= 1 (or -c 0 to skip it)")
    if a.synthetic_layers is not None and a.synthetic is None:
        raise ValueError("--synthetic-layers goes with --synthetic NAME")
    return BenchConfig(n_prompt=a.n_prompt, n_gen=a.n_gen, repetitions=a.repetitions,
                       concurrency=a.concurrency, load_prompt=a.load_prompt, load_output=a.load_output,
                       seed=a.seed)  # fmt: skip


def _model_path(a: argparse.Namespace) -> Path:
    if a.synthetic is not None:
        from .synthetic import ensure_synthetic

        return ensure_synthetic(a.synthetic, a.synthetic_layers, a.synthetic_dir, progress=True)
    from ..hub import resolve_model

    return resolve_model(a.model)


def cache_sizes(c: BenchConfig, context_length: int) -> tuple[int, int]:
    """(max_model_len, kv_cache_tokens) that hold the largest test: every load request fully cached."""
    longest = max(c.n_prompt, c.n_gen + 1, (c.load_prompt + c.load_output) if c.concurrency else 0, 16)
    if longest > context_length:
        raise ValueError(f"a test needs {longest} tokens of context but the model holds {context_length}")
    per_req = -(-(c.load_prompt + c.load_output) // BLOCK) * BLOCK
    return longest, max(longest + BLOCK, c.concurrency * per_req + BLOCK)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def run(a: argparse.Namespace) -> dict:
    """Every measurement of one `rocmforge bench` invocation, as the JSON object it prints."""
    from ..llm import LLM, resolve_device

    cfg = _check(a)
    device = resolve_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    path = _model_path(a)
    from ..config import ModelConfig
    from ..gguf.reader import GGUFFile

    f = GGUFFile(path)
    max_len, kv_tokens = cache_sizes(cfg, ModelConfig.from_gguf(f).context_length)
    t0 = time.perf_counter()
    llm = LLM(str(path), device=str(device), max_model_len=max_len, kv_cache_tokens=kv_tokens,
              enforce_eager=a.enforce_eager, batch_invariant=a.batch_invariant,
              max_num_seqs=max(1, a.concurrency) if a.batch_invariant else 64)
    load_s = time.perf_counter() - t0
    c = llm.model_config
    out: dict = {
        "model": {"name": a.synthetic or path.stem, "path": str(path), "synthetic": a.synthetic is not None,
                  "arch": c.arch, "layers": c.num_layers, "file_bytes": path.stat().st_size,
                  "params": sum(t.n_elements for t in f.tensors.values()),
                  "quant_types": dict(Counter(t.qtype_name for t in f.tensors.values()).most_common())},
        "device": {"type": device.type, "name": device_name(device), "dtype": str(llm.dtype)[6:],
                   "threads": torch.get_num_threads(), "torch": torch.__version__},
        "load_s": load_s, "weight_bytes": model_weight_bytes(llm.model),
        "pp": None, "tg": None, "load": None, "bandwidth": None, "baseline": None,
    }  # fmt: skip
    bench = EngineBench(llm, cfg)
    bench.warm_up()
    if cfg.n_prompt:
        out["pp"] = bench.pp()
    if cfg.n_gen:
        out["tg"] = bench.tg()
    if cfg.concurrency:
        out["load"] = bench.load()
    if cfg.n_gen:
        copy_bytes = (a.copy_mib or (1024 if device.type == "cuda" else 128)) * 2**20
        bw = decode_bandwidth(llm, out["tg"]["tok_s"], cfg.n_gen, copy_bandwidth(device, copy_bytes))
        out["bandwidth"] = {**bw, "copy_bytes": copy_bytes}
    g = llm.engine.graphs
    out["cuda_graphs"] = None if g is None else {"captured": sorted(g.captured), "disabled": g.disabled}
    del bench, llm, g  # NOTE: free our weights and KV cache before the baseline allocates its own
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if a.baseline == "hf":
        out["baseline"] = {"hf": _hf(c, device, cfg)}
    return out


def _hf(c, device: torch.device, cfg: BenchConfig) -> dict:
    from .hf_baseline import bench_hf

    try:
        return bench_hf(c, device=device, n_prompt=cfg.n_prompt, n_gen=cfg.n_gen,
                        repetitions=cfg.repetitions, seed=cfg.seed)  # fmt: skip
    except ImportError as e:  # stated in the output; our own figures are kept
        return {"error": f"HF baseline not run: {e}"}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def format_table(r: dict) -> str:
    """llama-bench's table, then the load and bandwidth lines."""
    m, d = r["model"], r["device"]
    name = f"{m['name']} ({'synthetic, ' if m['synthetic'] else ''}{m['layers']} layers)"
    size, params = f"{m['file_bytes'] / 2**20:.1f} MiB", f"{m['params'] / 1e6:.1f} M"
    rows = [(f"rocmforge {d['type']} {d['dtype']}", t) for t in (r["pp"], r["tg"]) if t]
    hf = (r.get("baseline") or {}).get("hf")
    if hf and "error" not in hf:
        label = f"HF transformers {d['type']} {hf['dtype']} {hf['attention']}"
        rows += [(label + (f" {hf['cache']} cache" if k == "tg" else ""), hf[k])
                 for k in ("pp", "tg") if k in hf]  # fmt: skip
    lines = [f"device: {d['name']}, torch {d['torch']}, {d['threads']} threads; "
             f"model load {r['load_s']:.1f} s", "",
             "| model | size | params | backend | test | t/s |", "|---|---:|---:|---|---:|---:|"]  # fmt: skip
    lines += [f"| {name} | {size} | {params} | {be} | {t['test']} | {t['tok_s']:.2f} |" for be, t in rows]
    if hf and "error" in hf:
        lines.append(f"\n{hf['error']}")
    if (ld := r["load"]) is not None:
        tt, it = ld["ttft_ms"], ld["itl_ms"]
        lines.append(
            f"\nload: {ld['concurrency']} concurrent requests x ({ld['prompt_tokens']} prompt + "
            f"{ld['output_tokens']} output tokens) in {ld['wall_s']:.2f} s: "
            f"{ld['output_tok_s']:.2f} output tok/s, {ld['total_tok_s']:.2f} total tok/s; "
            f"TTFT p50 {_ms(tt['p50'])}, p99 {_ms(tt['p99'])}; ITL p50 {_ms(it['p50'])}, p99 {_ms(it['p99'])}"
        )
    if (bw := r["bandwidth"]) is not None:
        lines.append(
            f"\ndecode bandwidth: ({bw['weight_bytes_per_token'] / 1e6:.1f} MB weights + "
            f"{bw['kv_bytes_per_token_mean'] / 1e6:.2f} MB KV mean) per token x "
            f"{r['tg']['tok_s']:.2f} tok/s = {bw['gb_s']:.2f} GB/s = {bw['pct_of_copy']:.1f}% of the "
            f"{bw['copy_gb_s']:.1f} GB/s of a {bw['copy_bytes'] / 2**20:.0f} MiB tensor copy (read + write)"
        )
    return "\n".join(lines)


def run_bench(a: argparse.Namespace) -> int:
    """The `rocmforge bench` command: measure, then print the table or (--json) one JSON object."""
    r = run(a)
    print(json.dumps(r) if a.json else format_table(r))
    sys.stdout.flush()
    return 0
