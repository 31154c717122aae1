"""HF transformers baseline: the same architecture and shapes, random weights, pp / tg in this process.

The model is built with `AutoModelForCausalLM.from_config` (random init, no hub download) from the
`ModelConfig` rocmforge read from the GGUF, in bfloat16 on a GPU and float32 on the CPU, eager
attention. Decode uses a `StaticCache` (preallocated, as `generate(cache_implementation="static")`
does) when it works, else the default dynamic cache; which one ran is reported.

    pp{P}   P / time of one forward over P random ids, last position's logits (median of the runs)
    tg{N}   N / time of N single-token forwards from an empty cache, greedy (argmax) feedback
"""

from __future__ import annotations

import inspect
import statistics
import time

import torch

from ..config import ModelConfig

_CONFIGS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config"}


def hf_config(c: ModelConfig, max_len: int):
    """transformers config with the shapes of `c` (llama and qwen2)."""
    import transformers

    if c.arch not in _CONFIGS:
        raise ValueError(f"the HF baseline covers {', '.join(_CONFIGS)}, not {c.arch!r}")
    return getattr(transformers, _CONFIGS[c.arch])(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.ffn_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, max_position_embeddings=max(max_len, 1), rms_norm_eps=c.rms_eps,
        rope_theta=c.rope_base, tie_word_embeddings=c.tied_embeddings, attn_implementation="eager",
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cache_arg(model) -> str:
    """The forward's KV-cache argument: "cache" in transformers >= 5.2x, "past_key_values" before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _tg(model, cfg, n: int, device: torch.device, dtype: torch.dtype, static: bool) -> float:
    """Seconds of n single-token forwards from an empty cache."""
    cache, arg = None, _cache_arg(model)
    if static:
        from transformers import StaticCache

        cache = StaticCache(config=cfg, max_cache_len=n + 1, device=device, dtype=dtype)
    tok = torch.zeros((1, 1), dtype=torch.long, device=device)  # (batch 1, 1 token)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        kw = {"cache_position": torch.tensor([i], device=device)} if static else {}
        out = model(tok, use_cache=True, **{arg: cache}, **kw)
        cache, tok = getattr(out, arg), out.logits[:, -1:].argmax(-1)
    _sync(device)
    return time.perf_counter() - t0


def bench_hf(c: ModelConfig, *, device: torch.device, n_prompt: int, n_gen: int, repetitions: int,
             seed: int = 0) -> dict:  # fmt: skip
    """{"dtype", "cache", "pp": {...}, "tg": {...}} measured now; raises ImportError without transformers."""
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    cfg = hf_config(c, n_prompt + n_gen + 1)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    g = torch.Generator().manual_seed(seed)
    # NOTE: like our engine, the prefill computes the logits of the last position only.
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    res: dict = {"dtype": str(dtype).removeprefix("torch."), "attention": "eager"}
    with torch.inference_mode():
        if n_prompt:
            runs = []
            model(torch.randint(0, c.vocab_size, (1, n_prompt), generator=g).to(device), **last)  # warm-up
            for _ in range(repetitions):
                x = torch.randint(0, c.vocab_size, (1, n_prompt), generator=g).to(device)  # (1, P)
                _sync(device)
                t0 = time.perf_counter()
                model(x, **last)
                _sync(device)
                runs.append(n_prompt / (time.perf_counter() - t0))
            res["pp"] = {"test": f"pp{n_prompt}", "tok_s": statistics.median(runs), "runs_tok_s": runs}
        if n_gen:
            static = True
            try:
                _tg(model, cfg, 2, device, dtype, static=True)  # warm-up, and does the static cache work?
            except Exception as e:  # any failure of the optional static path: recorded, dynamic runs
                static, res["static_cache_error"] = False, f"{type(e).__name__}: {e}"[:200]
                _tg(model, cfg, 2, device, dtype, static=False)
            runs = [n_gen / _tg(model, cfg, n_gen, device, dtype, static) for _ in range(repetitions)]
            res["cache"] = "static" if static else "dynamic"
            res["tg"] = {"test": f"tg{n_gen}", "tok_s": statistics.median(runs), "runs_tok_s": runs}
    del model
    return res
