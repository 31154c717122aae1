"""A whole model on the "triton" attention backend vs the "torch" one: same greedy tokens, close logits.

1. A tiny random CausalLM (config written by hand, 2 layers; gemma3: layer 0 slides over a 6-key window)
   in fp16, both backends on the same device (CPU under TRITON_INTERPRET=1, or the GPU). Two sequences go
   through one plan: a prefill batch, a mixed step (the second chunk of sequence 0's prompt next to
   sequence 1's first decode), then batched decodes. Only attention differs between the two runs, so the
   greedy tokens must be equal and each step's logits within fp16 rounding of the attention output
   (relative Frobenius error < 1e-2; measured under the interpreter: <= 1.8e-3, logits here are O(1)).
2. GPU only: SmolLM2 with fp16/bf16 weights and the triton backend on the GPU vs the fp32 torch path on
   CPU. Greedy tokens must agree until a step where the fp32 run's top two logits are a near tie
   (0.15 fp16 / 0.5 bf16 logits apart: the weights alone are rounded to 11 / 8 mantissa bits), and every
   logits row up to there is within 2e-2 (fp16) / 5e-2 (bf16) relative Frobenius error. NOTE: these
   bounds are estimates from the dtypes' rounding, not yet measured on a GPU.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from rocmforge.attention import build_metadata, get_backend
from rocmforge.cache.kv_cache import allocate_kv_cache
from rocmforge.config import ModelConfig

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernels = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels need a GPU or TRITON_INTERPRET=1 (set by `make test`)")


class Driver:
    """A model plus its own paged cache; block ids drawn from a shuffled pool (tables never contiguous)."""

    def __init__(self, model, config, *, device, dtype, num_blocks=32, block_size=4, seed=0):
        self.model, self.device, self.block_size = model, device, block_size
        self.kv = allocate_kv_cache(config, num_blocks, block_size, device=device, dtype=dtype)
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.lens: dict[int, int] = {}

    def step(self, batch: list[tuple[int, list[int]]]) -> torch.Tensor:  # -> (S, vocab) last-token logits
        ids, pos, qlens, ctx, tables = [], [], [], [], []
        for sid, toks in batch:
            start, table = self.lens.get(sid, 0), self.tables.setdefault(sid, [])
            while len(table) * self.block_size < start + len(toks):
                table.append(self.free.pop())
            ids += toks
            pos += range(start, start + len(toks))
            qlens.append(len(toks))
            ctx.append(start)
            tables.append(table)
            self.lens[sid] = start + len(toks)
        meta = build_metadata(qlens, ctx, tables, self.block_size, self.kv, self.device)
        with torch.inference_mode():
            return self.model(torch.tensor(ids, device=self.device), torch.tensor(pos, device=self.device),
                              meta).cpu()  # fmt: skip


def tiny_config(arch: str) -> ModelConfig:
    gemma = arch == "gemma3"
    return ModelConfig(
        arch=arch, context_length=128, hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2 if gemma else 1, head_dim=16, v_head_dim=16, ffn_size=96, vocab_size=97, rms_eps=1e-6,
        rope_base=10_000.0, rope_dim=16, rope_neox=gemma, rope_scaling=None, rope_freq_factors=False,
        rope_local_base=10_000.0 if gemma else None,
        sliding_window=6 if gemma else None, layer_sliding=(gemma, False), attn_scale=0.25,
        embed_scale=8.0 if gemma else None, attn_softcap=None, final_softcap=None, tied_embeddings=gemma,
        qkv_bias=False,
    )


def tiny_models(arch: str, dtype: torch.dtype):
    """The same random weights under both backends: {"triton": model, "torch": model}."""
    from rocmforge.models import MODELS

    cfg = tiny_config(arch)
    g = torch.Generator().manual_seed(7)
    models = {}
    for name in ("triton", "torch"):
        m = MODELS[arch](cfg, get_backend(name))
        if not models:
            weights = {}
            for key, p in m.state_dict().items():
                w = torch.randn(p.shape, generator=g)
                weights[key] = 1.0 + 0.1 * w if key.endswith("norm.weight") else w / p.shape[-1] ** 0.5
        m.load_state_dict(weights)
        models[name] = m.to(device=DEVICE, dtype=dtype).eval()
    return cfg, models


def greedy_plan(driver: Driver, prompts: list[list[int]], n: int):
    """Prefill (prompt 0 in two chunks), then n batched greedy decodes. Returns per sequence its tokens
    and, per token, the logits row (vocab,) it was the argmax of."""
    a, b = prompts
    cut = len(a) // 2
    rows: list[list[torch.Tensor]] = [[], []]
    plan = [[(0, a[:cut]), (1, b)], [(0, a[cut:])]]  # prefill batch; prompt 0's second chunk over context
    first = driver.step(plan[0])
    rows[1].append(first[1])
    for _ in range(n + 1):
        out = driver.step(plan[1] + [(1, [int(rows[1][-1].argmax())])])  # the 1st is a mixed batch
        rows[0].append(out[0])
        rows[1].append(out[1])
        plan[1] = [(0, [int(rows[0][-1].argmax())])]
    return [[int(r.argmax()) for r in seq] for seq in rows], rows


def assert_same_greedy(got, ref, *, tie: float, frob: float) -> None:
    """got/ref: greedy_plan results. Per sequence, every logits row within `frob` relative Frobenius error
    of the reference's and the same tokens, until a token differs where the reference's two candidates are
    within `tie` logits (a near tie that rounding may flip; the sequences part ways there)."""
    (tok_g, rows_g), (tok_r, rows_r) = got, ref
    for s in range(2):
        for i, (a, b) in enumerate(zip(rows_g[s], rows_r[s])):
            a, b = a.float(), b.float()
            assert torch.isfinite(a).all(), f"sequence {s} token {i}: non-finite logits"
            rel = ((a - b).norm() / b.norm()).item()
            assert rel < frob, f"sequence {s} token {i}: logits relative error {rel:.2e} >= {frob}"
            if tok_g[s][i] != tok_r[s][i]:
                margin = (b[tok_r[s][i]] - b[tok_g[s][i]]).item()
                assert margin < tie, (f"sequence {s} token {i}: {tok_g[s][i]} vs reference {tok_r[s][i]}, "
                                      f"whose logits are {margin:.3f} apart (not a near tie)")
                break


@needs_kernels
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tiny_model_same_greedy_tokens(arch):
    cfg, models = tiny_models(arch, torch.float16)
    prompts = [[3, 17, 42, 5, 88, 13, 2, 61, 30, 9, 71], [50, 4, 23, 19, 66, 8, 94]]
    runs = {name: greedy_plan(Driver(m, cfg, device=DEVICE, dtype=torch.float16), prompts, 6)
            for name, m in models.items()}  # fmt: skip
    assert_same_greedy(runs["triton"], runs["torch"], tie=0.05, frob=1e-2)
    # NOTE: strict: with these weights the reference's top-2 margins are >= 0.017 logits, ~10x the
    # attention rounding in the logits, so no token may flip
    assert runs["triton"][0] == runs["torch"][0]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares the triton backend on a GPU with the "
                    "CPU torch path; no CUDA/ROCm device here")  # fmt: skip
@pytest.mark.parametrize("dtype,tie,frob", [(torch.float16, 0.15, 2e-2), (torch.bfloat16, 0.5, 5e-2)])
def test_smollm2_triton_gpu_vs_cpu_torch(dtype, tie, frob):
    from rocmforge.gguf import GGUFFile
    from rocmforge.gguf.tokenizer import GGUFTokenizer
    from rocmforge.hub import ModelNotFoundError, resolve_model
    from rocmforge.models import load_model

    try:
        f = GGUFFile(resolve_model("smollm2"))
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 is not available: {e}")
    cfg = ModelConfig.from_gguf(f)
    tok = GGUFTokenizer.from_metadata(f.metadata)
    prompts = [tok.encode("The capital of France is"), tok.encode("def fibonacci(n):\n    ")]
    ref = Driver(load_model(f, cfg), cfg, device="cpu", dtype=torch.float32, num_blocks=64, block_size=16)
    gpu_model = load_model(f, cfg, device="cuda", dtype=dtype, attention_backend="triton")
    gpu = Driver(gpu_model, cfg, device="cuda", dtype=dtype, num_blocks=64, block_size=16)
    got, want = greedy_plan(gpu, prompts, 14), greedy_plan(ref, prompts, 14)
    assert_same_greedy(got, want, tie=tie, frob=frob)
    assert got[0][1][:4] == want[0][1][:4], "the first greedy tokens of the plain prompt differ"
