"""Timing rocmforge's engine (llama-bench's tests) and the bytes a decode step reads.

All timings go through `LLMEngine`'s public step API (add_request / step / output / abort), with greedy
sampling and ignore_eos so every request runs to its length, and fresh random prompt ids every time
(the prefix cache never hits). A step's tokens come back as Python ints, so each step has synced with
the device; on CUDA we also synchronize explicitly.

    pp{P}   P / (time until a P-token prompt's first token): one prefill forward + one sample
    tg{N}   N / (time of N single-token steps): a 1-token prompt, then N - 1 decode steps
    load    C requests of p prompt / o output tokens queued at t0 and run together (continuous batching):
            output tok/s = C o / wall, total tok/s = C (p + o) / wall, TTFT = first token time - t0,
            ITL = gaps between a request's consecutive tokens; p50 / p99 over requests / gaps

Bytes of one batch-1 decode step (`decode_bytes`), the floor of what must come from memory:
    weights = every tensor of the loaded model (model.state_dict(), as stored), except the embedding
              table, of which one row is read; a tied LM head with no `output.*` tensors of its own
              reads the whole table once
    KV      = sum over layers of L_eff * Hkv * (Dk + Dv) * itemsize, L_eff = context length including
              the new token (capped at the layer's sliding window); tg{N} averages L = 1..N: (N + 1) / 2
GB/s = (weights + mean KV) * tg tok/s, quoted against a device copy measured in the same run
(`copy_bandwidth`: bytes read + written by dst.copy_(src) over its median time).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ModelConfig
from ..sampling_params import SamplingParams


@dataclass(frozen=True)
class BenchConfig:
    n_prompt: int = 512  # pp test prompt tokens (0: skip)
    n_gen: int = 128  # tg test generated tokens (0: skip)
    repetitions: int = 3  # pp / tg runs; the median is reported
    concurrency: int = 4  # load test requests (0: skip)
    load_prompt: int = 128  # load test prompt tokens per request
    load_output: int = 128  # load test generated tokens per request
    seed: int = 0


# ---- bytes ----------------------------------------------------------------------------------------
def weight_bytes_per_token(tensors: Mapping[str, torch.Tensor], tied: bool) -> int:
    """Bytes of weights a batch-1 decode step reads (module docstring); `tensors` = model.state_dict()."""
    emb = tensors.get("token_embd.weight")  # (vocab, hidden); None: quantized (quant_bytes counts it)
    rest = sum(t.numel() * t.element_size() for n, t in tensors.items() if n != "token_embd.weight")
    if emb is None:
        return rest
    # NOTE: a tied model may still build its own head from the table (a packed `output.*`): then
    # the table is only gathered from, and that head is already in `rest`.
    head_is_table = tied and not any(n.startswith("output.") for n in tensors)
    return rest + (emb.numel() if head_is_table else emb.shape[-1]) * emb.element_size()


def quant_bytes(model, per_token: bool = False) -> int:
    """Bytes of the GGUF blocks QuantLinear / QuantEmbedding layers keep (not in state_dict: plain
    tensor attributes). per_token: what one batch-1 decode step reads, one row of an embedding table."""
    from ..layers.quant_embedding import QuantEmbedding

    total = 0
    for m in model.modules():
        w = getattr(m, "qweight", None)
        if w is not None:
            total += w.nbytes // w.n_out if per_token and isinstance(m, QuantEmbedding) else w.nbytes
    return total


def model_weight_bytes(model) -> int:
    """Every weight the model holds on its device: state_dict tensors + quantized blocks."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) + quant_bytes(model)


def kv_bytes(config: ModelConfig, context: int, itemsize: int) -> int:
    """K + V bytes read by one decode step whose context (new token included) is `context` tokens."""
    per_pos = config.num_kv_heads * (config.head_dim + config.v_head_dim) * itemsize
    total = 0
    for i in range(config.num_layers):
        w = config.layer_window(i)
        total += (context if w is None else min(context, w)) * per_pos
    return total


def mean_kv_bytes_tg(config: ModelConfig, n_gen: int, itemsize: int) -> float:
    """Mean KV bytes per step of tg{n_gen} from a 1-token prompt: contexts 1, 2, ..., n_gen."""
    return sum(kv_bytes(config, L, itemsize) for L in range(1, n_gen + 1)) / n_gen


def copy_bandwidth(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Bytes/s of dst.copy_(src) on `device` for an `nbytes` buffer, counting the read and the write."""
    src = torch.rand(nbytes // 4, device=device)  # (nbytes / 4,) float32
    dst = torch.empty_like(src)
    times = []
    for _ in range(reps + 1):  # the first copy warms up (page faults, clocks)
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times[1:])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the engine tests -----------------------------------------------------------------------------
class EngineBench:
    """Runs pp / tg / load tests on an `LLM`'s engine (rocmforge/llm.py)."""

    def __init__(self, llm, config: BenchConfig):
        self.llm, self.engine, self.config = llm, llm.engine, config
        self.rng = random.Random(config.seed)
        tok = llm.tokenizer
        avoid = set(tok.eog_ids) | {t for t in (tok.bos_id, tok.eos_id) if t is not None}
        self.pool = [i for i in range(llm.model_config.vocab_size) if i not in avoid]

    def prompt(self, n: int) -> list[int]:
        return [self.rng.choice(self.pool) for _ in range(n)]

    def run_requests(self, prompts: list[list[int]], max_tokens: int) -> tuple[float, list[list[float]]]:
        """Queue every prompt at t0, step to the end: (wall s, per request its tokens' times since t0).
        A token's time is when the step that drew it returned: its id is on the host then. No device
        sync per step: that would stop the engine's decode-ahead (the next step already queued)."""
        eng, dev = self.engine, self.llm.device
        sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        _sync(dev)
        t0 = time.perf_counter()
        rids = [eng.add_request(p, sp) for p in prompts]
        stamps: list[list[float]] = [[] for _ in rids]
        self.steps = {"graph": 0, "graph_s": 0.0, "eager": 0, "eager_s": 0.0,
                      "preemptions": -eng.scheduler.num_preemptions}  # fmt: skip
        last = 0.0
        try:
            while eng.has_unfinished():
                eng.step()
                now = time.perf_counter() - t0
                kind = "graph" if eng.ran_graph else "eager"
                self.steps[kind] += 1
                self.steps[kind + "_s"] += now - last
                last = now
                for r, rid in enumerate(rids):
                    n = eng.num_generated(rid)
                    stamps[r] += [now] * (n - len(stamps[r]))
        finally:
            for rid in rids:
                eng.abort(rid)
        _sync(dev)
        self.steps["preemptions"] += eng.scheduler.num_preemptions
        return time.perf_counter() - t0, stamps

    def warm_up(self) -> None:
        """One pp-sized prompt and a few decode steps (kernels compiled, caches warm) before timing."""
        c = self.config
        self.engine.capture_graphs()  # every batch size compiled and captured before any timing
        self.run_requests([self.prompt(max(1, c.n_prompt or 16))], 4)
        if c.concurrency:
            self.run_requests([self.prompt(c.load_prompt) for _ in range(c.concurrency)], 2)

    def pp(self) -> dict:
        n = self.config.n_prompt
        runs = [n / self.run_requests([self.prompt(n)], 1)[1][0][0] for _ in range(self.config.repetitions)]
        return {"test": f"pp{n}", "tokens": n, "tok_s": statistics.median(runs), "runs_tok_s": runs}

    def tg(self) -> dict:
        n = self.config.n_gen
        runs = [n / self.run_requests([self.prompt(1)], n)[0] for _ in range(self.config.repetitions)]
        return {"test": f"tg{n}", "tokens": n, "tok_s": statistics.median(runs), "runs_tok_s": runs}

    def load(self) -> dict:
        c = self.config
        wall, stamps = self.run_requests([self.prompt(c.load_prompt) for _ in range(c.concurrency)],
                                         c.load_output)  # fmt: skip
        return {**load_stats(wall, stamps, c.load_prompt), "steps": dict(self.steps)}


def load_stats(wall: float, stamps: list[list[float]], prompt_len: int) -> dict:
    """Throughput and latency figures of one load run (module docstring); times in ms."""
    ttft = [s[0] for s in stamps]
    gaps = [b - a for s in stamps for a, b in zip(s, s[1:])]
    n_out = sum(len(s) for s in stamps)

    def pct(xs: list[float], q: float) -> float | None:  # None (JSON null) when there are no samples
        return float(np.percentile(xs, q)) * 1e3 if xs else None

    n_req = len(stamps)
    return {
        "concurrency": n_req, "prompt_tokens": prompt_len, "output_tokens": n_out // max(1, n_req),
        "wall_s": wall, "output_tok_s": n_out / wall, "total_tok_s": (n_out + prompt_len * n_req) / wall,
        "ttft_ms": {"mean": 1e3 * sum(ttft) / len(ttft), "p50": pct(ttft, 50), "p99": pct(ttft, 99)},
        "itl_ms": {"mean": 1e3 * sum(gaps) / len(gaps) if gaps else None, "p50": pct(gaps, 50),
                   "p99": pct(gaps, 99)},
    }  # fmt: skip


def decode_bandwidth(llm, tg_tok_s: float, n_gen: int, copy_bytes_s: float) -> dict:
    """GB/s of batch-1 decode from the bytes arithmetic above, and its share of the measured copy."""
    cfg: ModelConfig = llm.model_config
    itemsize = llm.dtype.itemsize  # the KV cache is allocated in the engine's dtype
    w = weight_bytes_per_token(llm.model.state_dict(), cfg.tied_embeddings) + quant_bytes(llm.model, True)
    kv = mean_kv_bytes_tg(cfg, n_gen, itemsize)
    gbs = (w + kv) * tg_tok_s / 1e9
    return {"weight_bytes_per_token": w, "kv_bytes_per_token_mean": kv, "gb_s": gbs,
            "copy_gb_s": copy_bytes_s / 1e9, "pct_of_copy": 100.0 * gbs / (copy_bytes_s / 1e9),
            "formula": "(weights + mean KV bytes per token) * tg tok/s; weights = model.state_dict() "
                       "bytes as stored + quantized blocks, embedding: one row (whole table if it is "
                       "the head); KV over contexts 1..N"}  # fmt: skip
