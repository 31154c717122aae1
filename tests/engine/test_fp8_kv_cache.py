"""kv_cache_dtype="fp8" end to end on the CPU path (torch backend): SmolLM2's greedy tokens equal the
default cache's wherever the reference is decisive, and its logprobs stay close.

e4m3 rounds K and V to 3 mantissa bits (relative error <= 2^-4), so the comparison uses a 1.0
logit margin (compare in margins.py) and a 0.5 bound on the chosen tokens' logprob difference.
"""

import pytest
from margins import compare

from rocmforge.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Water boils at a temperature of"]


def test_fp8_cache_keeps_greedy_text(smollm2_path):
    from rocmforge.llm import LLM

    params = SamplingParams(temperature=0.0, max_tokens=24, logprobs=2)
    ref = LLM(smollm2_path, device="cpu", max_model_len=256).generate(PROMPTS, params)
    llm = LLM(smollm2_path, device="cpu", max_model_len=256, kv_cache_dtype="fp8")
    assert llm.engine.kv_caches[0][0].dtype.itemsize == 1
    got = llm.generate(PROMPTS, params)
    compared = total = 0
    for a, b in zip(ref, got):
        n, t = compare(a.outputs[0], b.outputs[0], 1.0)
        compared, total = compared + n, total + t
        for i in range(n):
            tok = a.outputs[0].token_ids[i]
            assert abs(a.outputs[0].logprobs[i][tok] - b.outputs[0].logprobs[i][tok]) < 0.5
    print(f"fp8 KV: {compared}/{total} greedy tokens equal the default cache's")
    assert compared >= total // 2, f"only {compared}/{total} tokens agree"


def test_bad_kv_cache_dtype_is_one_clear_error(smollm2_path):
    from rocmforge.llm import LLM

    with pytest.raises(ValueError, match="kv_cache_dtype must be 'auto', 'fp8' or 'fp8_e4m3'"):
        LLM(smollm2_path, device="cpu", kv_cache_dtype="int4")
