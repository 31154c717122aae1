"""Batch-invariant mode (LLM(batch_invariant=True)): a request's logits do not depend on what else runs.

Six greedy requests with different params (lengths, stop strings, min_tokens / ignore_eos) run
together, then each alone on the same engine: the tokens and every top-3 logprob (floats from the
logits, compared with ==) must be the same, so the logits are bit-identical. With the mode off this
test fails (the logprobs differ in their low bits: a batched decode reduces over the padded keys of
the longest sequence, and GEMM blocking may depend on a row's place in the batch). The GPU twin is in
test_gpu_generate.py.
"""

from rocmforge.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Water boils at a temperature of", "1, 2, 3, 4,"]  # fmt: skip


def test_six_requests_together_give_each_the_logits_of_running_alone(smollm2_path):
    from rocmforge import LLM

    llm = LLM(smollm2_path, device="cpu", max_model_len=256, kv_cache_tokens=4096, max_num_seqs=6,
              batch_invariant=True)  # fmt: skip
    extras = [dict(), dict(stop=["."]), dict(min_tokens=8, ignore_eos=True)]
    params = [SamplingParams(temperature=0.0, max_tokens=8 + 3 * i, logprobs=3, **extras[i % 3])
              for i in range(6)]  # fmt: skip
    sizes = []
    schedule = llm.engine.scheduler.schedule

    def recording():
        plan = schedule()
        sizes.append(len(plan.seqs))
        return plan

    llm.engine.scheduler.schedule = recording
    together = llm.generate(PROMPTS, params)
    assert max(sizes) == 6  # the six did decode in one step
    for prompt, sp, out in zip(PROMPTS, params, together):
        alone = llm.generate([prompt], sp)[0].outputs[0]
        got = out.outputs[0]
        assert got.token_ids == alone.token_ids and got.text == alone.text, prompt
        assert got.logprobs == alone.logprobs, prompt
