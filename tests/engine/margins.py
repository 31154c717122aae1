"""Greedy-token comparison that allows divergence only at near-ties (a test helper, not a test module).

Two numerically different but correct paths (bf16 vs fp32, fp8 vs bf16 KV, batch 16 vs batch 1) may
pick different tokens where the top-2 logits nearly tie. `compare` walks the reference completion
(asked with logprobs >= 2) while the tokens agree; where they first differ, the reference's margin
there (top-1 minus top-2 raw logprob = logit gap) must be below `margin`. After that the contexts
differ, so nothing further is compared.
"""


def margins(completion) -> list[float]:
    """Top-1 minus top-2 raw logprob at each step of a logprobs >= 2 completion."""
    out = []
    for lp in completion.logprobs:
        top = sorted(lp.values(), reverse=True)
        out.append(top[0] - top[1])
    return out


def compare(ref, got, margin: float) -> tuple[int, int]:
    """(length of the agreeing prefix, tokens in ref); asserts that a divergence is at a near-tie."""
    r, g, m = ref.token_ids, got.token_ids, margins(ref)
    n = 0
    while n < len(r) and n < len(g) and g[n] == r[n]:
        n += 1
    if n < len(r) and n < len(g):
        assert m[n] < margin, f"step {n}: ref {r[:n + 1]} vs {g[:n + 1]}, margin {m[n]:.2f} >= {margin}"
    return n, len(r)
