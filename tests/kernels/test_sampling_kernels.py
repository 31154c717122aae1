"""Sampling helpers: penalties kernel vs twin (and the twin vs HF's repetition penalty), the sort-based
masks vs a float64 per-row twin (and the twin vs HF's top-k / top-p / min-p warpers), and the Gumbel-max
sampler: greedy exactness, reproducibility, masked tokens never drawn, and a chi-square frequency test.

Chi-square over 5 tokens (df = 4): P(chi2 > 23.5) = 1e-4 for a correct sampler. Seeds are fixed, so the
test is deterministic. 20000 draws on a GPU (a sampler off by 5% on a token of p = 0.3 gives chi2 ~ 40);
the interpreter runs ~0.05 s per row, so on CPU 200 draws (catches a wrong temperature or noise law)."""

import pytest
import torch

from rocmforge.kernels.reference_ops import apply_penalties_ref, sample_gumbel_ref, top_k_top_p_min_p_ref
from rocmforge.kernels.sampling import (
    apply_penalties,
    apply_temperature,
    apply_top_k_top_p_min_p,
    sample_gumbel,
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
CHI2_DF4_P1E4 = 23.51
N_DRAWS = 20000 if DEV == "cuda" else 200


@pytest.mark.parametrize("with_prompt", [False, True])
def test_penalties_kernel_matches_twin(with_prompt):
    g = torch.Generator().manual_seed(0)
    S, V = 4, 5000
    lg = torch.randn(S, V, generator=g)
    counts = torch.randint(0, 4, (S, V), generator=g, dtype=torch.int32)
    counts *= torch.rand(S, V, generator=g) < 0.05
    prompt = torch.rand(S, V, generator=g) < 0.02
    rep, fr = torch.tensor([1.0, 1.3, 0.8, 2.0]), torch.tensor([0.0, 0.5, 0.1, 1.0])
    pr = torch.rand(S, generator=g)
    arg = (prompt.to(DEV), counts.to(DEV)) if with_prompt else counts.to(DEV)
    out = apply_penalties(lg.to(DEV).clone(), arg, rep.to(DEV), fr.to(DEV), pr.to(DEV))
    ref = apply_penalties_ref(lg, prompt if with_prompt else torch.zeros_like(prompt), counts, rep, fr, pr)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-6, atol=1e-6)


def test_repetition_twin_matches_hf():
    from transformers import RepetitionPenaltyLogitsProcessor

    lg = torch.randn(1, 50)
    ids = torch.tensor([[3, 7, 7, 20, 49]])
    counts = torch.zeros(1, 50, dtype=torch.int32)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    ref = apply_penalties_ref(lg, torch.zeros(1, 50, dtype=torch.bool), counts, torch.tensor([1.7]),
                              torch.zeros(1), torch.zeros(1))
    torch.testing.assert_close(ref, RepetitionPenaltyLogitsProcessor(1.7)(ids, lg.clone()))


def test_masks_match_twin_and_hf():
    from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(1)
    lg = torch.randn(5, 300, generator=g) * 3  # continuous: no ties
    tk, tp = torch.tensor([0, 5, 100, 1, 300]), torch.tensor([1.0, 0.5, 0.9, 0.3, 0.99])
    mp = torch.tensor([0.0, 0.1, 0.0, 0.5, 0.01])
    out = apply_top_k_top_p_min_p(lg.to(DEV), tk.to(DEV), tp.to(DEV), mp.to(DEV)).cpu()
    ref = top_k_top_p_min_p_ref(lg, tk, tp, mp)
    assert torch.equal(torch.isinf(out), torch.isinf(ref))
    torch.testing.assert_close(out[~torch.isinf(out)], ref[~torch.isinf(ref)])
    for s in range(5):
        row, ids = lg[s : s + 1], torch.zeros(1, 1, dtype=torch.long)
        if 0 < tk[s] < 300:
            row = TopKLogitsWarper(int(tk[s]))(ids, row)
        if tp[s] < 1:
            row = TopPLogitsWarper(float(tp[s]))(ids, row)
        if mp[s] > 0:
            row = MinPLogitsWarper(float(mp[s]))(ids, row)
        assert torch.equal(torch.isinf(row[0]), torch.isinf(ref[s])), f"row {s}"


def test_temperature():
    lg = torch.randn(3, 10, device=DEV)
    out = apply_temperature(lg, torch.tensor([0.0, 0.5, 2.0], device=DEV))
    torch.testing.assert_close(out, torch.stack([lg[0], lg[1] / 0.5, lg[2] / 2.0]))


def test_gumbel_greedy_reproducible_and_masked():
    g = torch.Generator().manual_seed(2)
    S, V = 6, 1500
    lg = torch.randn(S, V, generator=g).to(DEV)
    lg[3, 100:] = float("-inf")  # only tokens < 100 allowed
    temps = torch.tensor([0.0, 1.0, 1.0, 0.7, 0.0, 2.0], device=DEV)
    seeds = torch.tensor([1, 2, 3, 4, 5, 6], device=DEV)
    offs = torch.tensor([0, 0, 1, 2**33 + 5, 7, 9], device=DEV)  # a counter past 2^32 too
    a = sample_gumbel(lg, temps, seeds, offs, chunk=1024)
    b = sample_gumbel(lg, temps, seeds, offs, chunk=256)  # chunking must not change the draw
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert a[0] == lg[0].argmax() and a[4] == lg[4].argmax()
    assert 0 <= int(a[3]) < 100
    draws = torch.stack([sample_gumbel(lg, temps, seeds, offs + i) for i in range(4)])
    assert len(set(draws[:, 5].tolist())) > 1, "a new offset must give a new draw"


def _chi2(samples, p):
    n = samples.numel()
    obs = torch.bincount(samples.cpu(), minlength=p.numel()).double()
    return float(((obs - n * p) ** 2 / (n * p)).sum())


def test_gumbel_distribution_chi_square():
    lg = torch.tensor([1.0, 0.5, 0.0, -0.5, 0.8])
    T, N = 0.8, N_DRAWS
    p = torch.softmax(lg.double() / T, 0)
    rows = lg.to(DEV).expand(N, 5).contiguous()
    x = sample_gumbel(rows, torch.full((N,), T, device=DEV), torch.full((N,), 1234, device=DEV),
                      torch.arange(N, device=DEV))
    assert _chi2(x, p) < CHI2_DF4_P1E4
    y = sample_gumbel_ref(rows.cpu(), torch.full((N,), T), torch.Generator().manual_seed(5))
    assert _chi2(y, p) < CHI2_DF4_P1E4
