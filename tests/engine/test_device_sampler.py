"""The sampler's device path (engine/device_sampler.py) against the CPU sampler, its reference.

Greedy picks, masks (top-k / top-p / min-p / bans) and logprobs must agree with the CPU path exactly;
the draws come from another random stream, so they are checked against the filtered distribution.
Runs on the GPU when there is one, else the Triton kernels run under TRITON_INTERPRET=1.
"""

import os

import pytest
import torch

from rocmforge.engine.sampler import Sampler, SamplingRow, processed_logits, seeded_generator
from rocmforge.sampling_params import SamplingParams

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the device sampler's kernels need a GPU or TRITON_INTERPRET=1")


def both(logits: torch.Tensor, rows: list[SamplingRow]):
    cpu = Sampler(0, on_device=False)(logits, rows)
    dev = Sampler(0, on_device=True)(logits.to(DEV), rows)
    return cpu, dev


def test_greedy_with_penalties_and_bans_matches_cpu():
    g = torch.Generator().manual_seed(1)
    V = 300
    logits = torch.randn(6, V, generator=g) * 3
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repetition_penalty=1.7),
        SamplingParams(temperature=0.0, frequency_penalty=2.0, presence_penalty=1.0),
        SamplingParams(temperature=0.0, repetition_penalty=0.6, frequency_penalty=-0.5),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, top_k=1),
    ]
    top = logits.argsort(dim=-1, descending=True)
    rows = []
    for i, p in enumerate(params):
        favourite = top[i, :4].tolist()  # penalise the current leaders so the pick moves
        rows.append(SamplingRow(p, prompt_ids=favourite[:2], output_ids=favourite[1:3] * 2,
                                banned_ids=tuple(favourite[:1]) if i == 4 else ()))
    cpu, dev = both(logits, rows)
    assert dev.token_ids == cpu.token_ids
    assert dev.token_ids[4] != top[4, 0]  # the ban moved row 4's pick


def test_logprobs_match_cpu():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 200, generator=g) * 2
    rows = [SamplingRow(SamplingParams(temperature=0.0, logprobs=k), [], []) for k in (0, 3, 5)]
    cpu, dev = both(logits, rows)
    assert dev.token_ids == cpu.token_ids
    for a, b in zip(cpu.logprobs, dev.logprobs):
        assert a.keys() == b.keys()
        for t in a:
            assert b[t] == pytest.approx(a[t], abs=1e-5)


def test_by_row_logprobs_equal_each_row_drawn_alone():
    """Batch-invariant mode (Sampler.by_row): a row's logprobs, tied values included, are those it gets
    drawn alone, whatever k the other rows ask for."""
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 300, generator=g) * 4).round() / 2  # steps of 0.5: many exact ties
    rows = [SamplingRow(SamplingParams(temperature=0.0, logprobs=k), [], []) for k in (1, 2, 5, 8)]
    sampler = Sampler(0, on_device=True)
    sampler.by_row = True
    together = sampler(logits.to(DEV), rows)
    for i, row in enumerate(rows):
        alone = sampler(logits[i:i + 1].to(DEV), [row])
        assert together.token_ids[i] == alone.token_ids[0]
        assert together.logprobs[i] == alone.logprobs[0]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.8, top_k=5),
    SamplingParams(temperature=1.3, top_p=0.6),
    SamplingParams(temperature=1.0, min_p=0.2),
    SamplingParams(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3),
])  # fmt: skip
def test_draws_stay_in_the_cpu_support_and_follow_its_distribution(params):
    """Many rows of the same logits: every draw is a token the CPU path keeps, and the draw
    frequencies match softmax of the CPU path's processed logits (3-sigma per token)."""
    g = torch.Generator().manual_seed(3)
    V, N = 64, (1024 if DEV == "cuda" else 384)
    base = torch.randn(V, generator=g) * 2
    row0 = SamplingRow(params, [1, 2], [3])
    z = processed_logits(base, row0)
    support = set(torch.nonzero(torch.isfinite(z)).flatten().tolist())
    probs = torch.softmax(z, dim=-1)
    rows = [SamplingRow(params, [1, 2], [3]) for _ in range(N)]
    dev = Sampler(7, on_device=True)(base.expand(N, V).contiguous().to(DEV), rows)
    assert set(dev.token_ids) <= support
    freq = torch.bincount(torch.tensor(dev.token_ids), minlength=V).double() / N
    sigma = (probs.double() * (1 - probs.double()) / N).sqrt()
    assert torch.all((freq - probs.double()).abs() <= 3 * sigma + 2.0 / N), (freq, probs)


def test_seeded_rows_are_reproducible_and_offsets_differ():
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(1, 500, generator=g)).expand(8, 500).contiguous()
    p = SamplingParams(temperature=1.0, seed=11)

    def draw(out_len: int) -> list[int]:
        rows = [SamplingRow(p, [], [0] * out_len, seeded_generator(11, i)) for i in range(8)]
        return Sampler(None, on_device=True)(logits.to(DEV), rows).token_ids

    a, b = draw(0), draw(0)
    assert a == b  # same seeds, same offsets: same draws, whatever the default generator
    assert len(set(a)) > 1  # the 8 samples (seed index) differ
    assert draw(1) != a  # the next offset is a new draw
