"""Where batch-invariant decode differs, if it does: the raw logits each request's rows had when run
16 together and alone (bit compare), and torch.log_softmax of a row alone vs inside a batch.

Run: python benchmarks/diag_invariant.py SmolLM2.gguf   (a GPU; prints counts)
"""

import sys

import torch

from rocmforge.llm import LLM
from rocmforge.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Water boils at a temperature of"]  # fmt: skip


def main(path: str) -> None:
    llm = LLM(path, device="cuda", max_model_len=256, max_num_seqs=16, batch_invariant=True)
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(16)]
    params = [SamplingParams(temperature=0.0, max_tokens=12 + 2 * i, logprobs=2 + i % 3) for i in range(16)]
    seen: dict[tuple, list[torch.Tensor]] = {}
    orig = llm.engine.sampler.draw

    def draw(logits, rows):
        for i, r in enumerate(rows):
            key = (tuple(r.prompt_ids), len(r.output_ids))
            seen.setdefault(key, []).append(logits[i].float().cpu().clone())
        return orig(logits, rows)

    llm.engine.sampler.draw = draw
    together = llm.generate(prompts, params)
    alone = [llm.generate([p], sp)[0] for p, sp in zip(prompts, params)]
    pairs = [v for v in seen.values() if len(v) == 2]
    same = sum(bool(torch.equal(a, b)) for a, b in pairs)
    print(f"logit rows equal together vs alone: {same}/{len(pairs)}")
    worst = max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
    print(f"largest logit difference: {worst:.3g}")
    lp_same = sum(t.outputs[0].logprobs == a.outputs[0].logprobs for t, a in zip(together, alone))
    print(f"requests with equal logprobs: {lp_same}/16")
    x = torch.randn(16, 49152, device="cuda")
    full = torch.log_softmax(x, dim=-1)
    rows_eq = sum(bool(torch.equal(full[i], torch.log_softmax(x[i:i + 1], dim=-1)[0])) for i in range(16))
    print(f"log_softmax row inside a (16, V) batch == alone: {rows_eq}/16")


if __name__ == "__main__":
    main(sys.argv[1])
