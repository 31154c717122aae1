"""SmolLM2 on the GPU (quantized weights, Triton kernels, CUDA graphs, device sampler) against the CPU
path (exact fp32 dequantized weights, torch backend), and 16 concurrent requests against each alone.

Greedy tokens may only differ where the reference's top-2 logit margin is small: the GPU computes in
bf16 with fp32 accumulation, so its logits differ from the fp32 CPU path's. margins.compare walks
each completion while the tokens agree and requires the first divergence, if any, to be at a step
whose reference margin is below MARGIN; the agreeing prefixes must also cover most tokens, so the
check cannot pass vacuously.
"""

import pytest
import torch
from margins import compare

from rocmforge.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="compares the GPU path; needs a GPU")

MARGIN = 0.5
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Water boils at a temperature of"]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2():
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return str(resolve_model("smollm2", pull_missing=False))
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not on this machine: {e}")


def _compare(ref, got) -> tuple[int, int]:
    return compare(ref, got, MARGIN)


def test_gpu_greedy_tokens_equal_the_cpu_path(smollm2):
    from rocmforge.llm import LLM

    params = SamplingParams(temperature=0.0, max_tokens=32, logprobs=2)
    cpu = LLM(smollm2, device="cpu", max_model_len=256).generate(PROMPTS, params)
    gpu_llm = LLM(smollm2, device="cuda", max_model_len=256)
    gpu = gpu_llm.generate(PROMPTS, params)
    assert gpu_llm.engine.graphs is not None and gpu_llm.engine.graphs.disabled is None
    compared = total = 0
    for a, b in zip(cpu, gpu):
        n, t = _compare(a.outputs[0], b.outputs[0])
        compared, total = compared + n, total + t
        print(f"{a.prompt!r}: {n}/{t} tokens agree; cpu {a.outputs[0].text!r} gpu {b.outputs[0].text!r}")
    print(f"GPU vs CPU: {compared}/{total} greedy tokens agree")
    assert compared >= total // 2, f"only {compared}/{total} tokens agree"


def sixteen_requests() -> tuple[list[str], list[SamplingParams]]:
    """16 greedy requests: the prompts (repeats padded with spaces) and params that differ in length,
    stop strings, min_tokens / ignore_eos and logprob counts."""
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(16)]
    extras = [dict(), dict(stop=["."]), dict(min_tokens=8, ignore_eos=True), dict(stop=["\n"])]
    params = [SamplingParams(temperature=0.0, max_tokens=12 + 2 * i, logprobs=2 + i % 3, **extras[i % 4])
              for i in range(16)]  # fmt: skip
    return prompts, params


def test_sixteen_concurrent_requests_match_each_alone(smollm2):
    """Greedy requests with different params (lengths, stop strings, min_tokens, ignore_eos, logprob
    counts) run 16 at a time: each one's tokens equal its tokens run alone (batch 1)."""
    from rocmforge.llm import LLM

    llm = LLM(smollm2, device="cuda", max_model_len=256)
    prompts, params = sixteen_requests()
    together = llm.generate(prompts, params)
    compared = total = 0
    for p, sp, out in zip(prompts, params, together):
        alone = llm.generate([p], sp)[0].outputs[0]
        n, t = _compare(alone, out.outputs[0])
        compared, total = compared + n, total + t
        if n == t:  # every token the same: the same text, stop strings included
            assert out.outputs[0].text == alone.text
    print(f"16 together vs alone: {compared}/{total} greedy tokens agree")
    assert compared >= total // 2, f"only {compared}/{total} tokens agree"


def test_sixteen_concurrent_batch_invariant_requests_equal_each_alone_exactly(smollm2):
    """The same 16 requests with LLM(batch_invariant=True): every token and every logprob (floats
    from the logits, ==) equals the request's own run alone; decode replays one graph of 16 rows."""
    from rocmforge.llm import LLM

    llm = LLM(smollm2, device="cuda", max_model_len=256, max_num_seqs=16, batch_invariant=True)
    prompts, params = sixteen_requests()
    together = llm.generate(prompts, params)
    assert llm.engine.graphs.captured == [16] and llm.engine.graphs.disabled is None
    bad = []
    for p, sp, out in zip(prompts, params, together):
        alone = llm.generate([p], sp)[0].outputs[0]
        got = out.outputs[0]
        if (got.token_ids, got.text, got.logprobs) != (alone.token_ids, alone.text, alone.logprobs):
            n = next((i for i, (a, b) in enumerate(zip(alone.logprobs, got.logprobs)) if a != b), None)
            bad.append(f"{p!r}: tokens equal {got.token_ids == alone.token_ids}, first logprob difference "
                       f"at step {n}")
    print(f"16 together vs alone, batch-invariant: {16 - len(bad)}/16 identical (tokens, text, logprobs)")
    assert not bad, "; ".join(bad)
