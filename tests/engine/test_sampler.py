"""The sampler's transforms against hand computations, its draw against the filtered distribution."""

import math

import numpy as np
import pytest
import torch

from rocmforge.engine.sampler import (
    Sampler,
    SamplingRow,
    apply_min_p,
    apply_penalties,
    apply_top_k,
    apply_top_p,
    processed_logits,
    seeded_generator,
    top_logprobs,
)
from rocmforge.sampling_params import SamplingParams

NEG = float("-inf")


def kept(z: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(z)).flatten().tolist()


def test_penalties_by_hand():
    z = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0])
    # prompt {0, 1}, output 1 x1, 3 x2. repetition 2 on {0,1,3}: 1.0, -2.0, 1.5;
    # then frequency 0.5 * count and presence 0.25: token 1: -2 - 0.5 - 0.25; token 3: 1.5 - 1.0 - 0.25.
    out = apply_penalties(z, [0, 1], [1, 3, 3], repetition=2.0, frequency=0.5, presence=0.25)
    assert out.tolist() == [1.0, -2.75, 0.5, 0.25, -2.0]
    assert z.tolist() == [2.0, -1.0, 0.5, 3.0, -2.0]  # input untouched
    assert torch.equal(apply_penalties(z, [0], [3]), z)  # all off


def test_top_k_keeps_ties():
    z = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0])
    assert kept(apply_top_k(z, 2)) == [1, 3]
    assert kept(apply_top_k(z, 3)) == [1, 2, 3]
    assert kept(apply_top_k(z, 0)) == [0, 1, 2, 3, 4]
    assert kept(apply_top_k(z, 99)) == [0, 1, 2, 3, 4]


PROBS = [0.15, 0.5, 0.05, 0.3]


@pytest.mark.parametrize(
    "p, expect", [(0.4, [1]), (0.75, [1, 3]), (0.85, [0, 1, 3]), (0.97, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])]
)
def test_top_p_by_hand(p, expect):
    z = torch.tensor(PROBS).log()
    out = apply_top_p(z, p)
    assert kept(out) == expect
    assert torch.equal(out[expect], z[expect])  # survivors unchanged


@pytest.mark.parametrize("m, expect", [(0.0, [0, 1, 2, 3]), (0.25, [0, 1, 3]), (0.35, [1, 3]), (1.0, [1])])
def test_min_p_by_hand(m, expect):
    # threshold = m * 0.5
    assert kept(apply_min_p(torch.tensor(PROBS).log(), m)) == expect


def test_processed_greedy_skips_temperature_but_keeps_penalties_and_bans():
    z = torch.tensor([2.0, 1.9, 0.0])
    row = SamplingRow(SamplingParams(temperature=0.0, repetition_penalty=2.0), [0], [], banned_ids=(2,))
    assert processed_logits(z, row).tolist() == pytest.approx([1.0, 1.9, NEG])
    row = SamplingRow(SamplingParams(temperature=0.5), [], [])
    assert processed_logits(z, row).tolist() == pytest.approx([4.0, 3.8, 0.0])
    row = SamplingRow(SamplingParams(temperature=0, repetition_penalty=2.0), [0], [])
    assert Sampler(0)(z[None], [row]).token_ids == [1]
    assert z.tolist() == pytest.approx([2.0, 1.9, 0.0])  # never modified in place


def test_logprobs_are_raw_log_softmax():
    z = torch.tensor(PROBS).log() + 3.0  # shift: log_softmax must undo it
    lp = top_logprobs(z, 2, chosen=2)
    assert list(lp) == [1, 3, 2]
    for t, v in lp.items():
        assert v == pytest.approx(math.log(PROBS[t]), abs=1e-6)
    assert list(top_logprobs(z, 0, chosen=0)) == [0]
    # The sampler reports raw logprobs even when penalties and temperature change the draw.
    sp = SamplingParams(temperature=0, repetition_penalty=100.0, logprobs=1)
    res = Sampler(0)(z[None], [SamplingRow(sp, [1], [])])
    assert res.token_ids == [3]
    assert res.logprobs[0][3] == pytest.approx(math.log(0.3), abs=1e-6)
    assert res.logprobs[0][1] == pytest.approx(math.log(0.5), abs=1e-6)


def reference_distribution(logits, temperature, top_k, top_p, min_p):
    """Independent float64 numpy version of temperature -> top-k -> top-p -> min-p."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros(len(z), bool)
    keep[order[:top_k]] = True
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    mass = 0.0
    for t in order:
        if keep[t] and mass >= top_p:
            keep[t] = False
        mass += p[t]
    p = np.where(keep, p, 0.0)
    p /= p.sum()
    p = np.where(p >= min_p * p.max(), p, 0.0)
    return p / p.sum()


def test_draw_frequencies_match_filtered_distribution():
    logits = [1.0, 2.0, 0.5, -1.0, 1.5, 0.0, 0.9]
    kw = dict(temperature=0.8, top_k=5, top_p=0.9, min_p=0.1)
    expect = reference_distribution(logits, **kw)
    support = np.flatnonzero(expect)
    assert 2 <= len(support) < len(logits)  # the filters do bite, and leave a real choice
    N = 3000
    sp = SamplingParams(**kw)
    rows = [SamplingRow(sp, [], []) for _ in range(N)]
    res = Sampler(seed=1234)(torch.tensor(logits).expand(N, -1), rows)
    counts = np.bincount(res.token_ids, minlength=len(logits))
    assert counts[expect == 0].sum() == 0  # filtered tokens are never drawn
    chi2 = float((((counts - N * expect)[support]) ** 2 / (N * expect[support])).sum())
    # chi-square with len(support)-1 <= 4 degrees of freedom: P(chi2 > 23.5) < 1e-4.
    assert chi2 < 23.5, (counts, N * expect)


def test_seed_reproducibility():
    z = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    sp = SamplingParams(temperature=1.0, seed=7)

    def draws(gen):
        return [Sampler()(z, [SamplingRow(sp, [], [], generator=gen)]).token_ids[0] for _ in range(30)]

    a, b = draws(seeded_generator(7)), draws(seeded_generator(7))
    assert a == b
    assert draws(seeded_generator(8)) != a
    assert draws(seeded_generator(7, index=1)) != a
    s1, s2 = Sampler(seed=3), Sampler(seed=3)
    row = SamplingRow(SamplingParams(), [], [])
    assert [s1(z, [row]).token_ids[0] for _ in range(20)] == [s2(z, [row]).token_ids[0] for _ in range(20)]


def test_bad_shape():
    with pytest.raises(ValueError, match="2 sequences"):
        Sampler(0)(torch.zeros(3, 5), [SamplingRow(SamplingParams(), [], [])] * 2)
