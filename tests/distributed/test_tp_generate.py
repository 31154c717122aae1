"""Tensor parallelism end to end: 2 gloo processes on the CPU vs the plain rocmforge.LLM (TP=1).

This test process is rank 0 (scheduler, sampler, its shard); one spawned worker is rank 1. Checks:
greedy tokens of 2 prompts x 16 new tokens are identical to TP=1; n=2 greedy samples (forked
sequences: the engine copies shared KV blocks, which the worker must replay) match too; and the
logits of one full forward over prompt + completion (a scratch KV cache: the worker allocates its
own) are close to TP=1's.

Tolerance on logits: atol 5e-4. TP sums each row-parallel layer's output as two fp32 partial dot
products (all_reduce) where TP=1 makes one, so every layer adds fp32 rounding (relative ~1e-7 per
sum, carried through 24-30 layers); logits reach |20-40|, measured max |diff| 5e-5 (SmolLM2) and
2e-5 (Qwen2.5-Coder): a 10x margin. Dropping the worker's block copies fails the forked check.
Hangs fail instead of blocking CI: every rendezvous and collective times out after 120 s.
"""

from __future__ import annotations

import pytest
import torch

from rocmforge.attention.metadata import build_metadata
from rocmforge.cache.kv_cache import allocate_kv_cache
from rocmforge.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
NEW = 16
MAX_LEN, KV_TOKENS = 256, 1024


def _path(name: str):
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return resolve_model(name)
    except ModelNotFoundError as e:
        pytest.skip(f"real model {name!r} is not available: {e}")


def full_logits(llm, ids: list[int]) -> torch.Tensor:
    """(T, V) logits of one fresh forward over ids, through llm.model, in a scratch cache sized by
    llm.model_config (TP: rank 0's local KV heads)."""
    bs, T = 16, len(ids)
    nb = -(-T // bs)
    kv = allocate_kv_cache(llm.model_config, nb, bs)
    meta = build_metadata([T], [0], [list(range(nb))], bs, kv, "cpu", logits="all")
    with torch.inference_mode():
        return llm.model(torch.tensor(ids), torch.arange(T), meta).float()


def _run(llm):
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW, ignore_eos=True)
    outs = llm.generate(PROMPTS, greedy)
    tokens = [o.outputs[0].token_ids for o in outs]
    forked = llm.generate(PROMPTS[:1], SamplingParams(n=2, temperature=0.0, max_tokens=NEW, ignore_eos=True))
    seq = list(outs[0].prompt_token_ids) + list(tokens[0])
    return tokens, [c.token_ids for c in forked[0].outputs], full_logits(llm, seq)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # NOTE: 2 cores, 2 processes: torch's intra-op threads spin against each other (10x slower).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "qwen2.5-coder"])
def test_tp2_matches_tp1(name):
    from rocmforge import LLM
    from rocmforge.distributed import TensorParallelLLM

    path = _path(name)
    ref = LLM(str(path), device="cpu", max_model_len=MAX_LEN, kv_cache_tokens=KV_TOKENS)
    want_tokens, want_forked, want_logits = _run(ref)
    del ref  # frees the unsplit weights before the shards load
    with TensorParallelLLM(str(path), tensor_parallel_size=2, device="cpu", max_model_len=MAX_LEN,
                           kv_cache_tokens=KV_TOKENS, timeout_s=120) as tp:  # fmt: skip
        cfg = tp.full_config
        assert tp.model_config.num_kv_heads < cfg.num_kv_heads  # rank 0's cache holds its heads only
        tokens, forked, logits = _run(tp)
    assert tokens == want_tokens
    assert forked == [want_forked[0]] * 2 == want_forked
    assert logits.shape == want_logits.shape == (len(want_logits), cfg.vocab_size)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=5e-4)


def test_unsplittable_heads_fail_before_any_process_starts():
    from rocmforge.distributed import TensorParallelLLM

    with pytest.raises(ValueError, match="tensor parallel size 3 does not fit 14 query / 2 KV heads"):
        TensorParallelLLM(str(_path("qwen2.5-coder")), tensor_parallel_size=3, device="cpu")


@pytest.mark.slow
def test_a_dead_worker_fails_the_step_instead_of_hanging():
    import time

    from rocmforge.distributed import TensorParallelLLM

    with TensorParallelLLM(str(_path("smollm2")), tensor_parallel_size=2, device="cpu", max_model_len=MAX_LEN,
                           kv_cache_tokens=KV_TOKENS, timeout_s=120) as tp:  # fmt: skip
        worker = tp._procs[0]
        worker.kill()  # the process this test started, by its handle
        worker.join(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="rank 1: its process is gone"):
            tp.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=2))
        assert time.monotonic() - t0 < 60  # well inside the 120 s collective timeout: no hang
