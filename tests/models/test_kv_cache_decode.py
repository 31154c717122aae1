"""Paged KV cache: chunked prefill and one-token decode agree with one full forward.

Backend-level checks use random tensors against the contiguous pure-torch twin
(kernels/reference_attention.py) and a float64 softcap twin; model-level checks use SmolLM2.
Tolerances: fp32 attention over <= 64 keys, 1e-5 abs on O(1) outputs; fp32 model logits (|x| ~ 20),
2e-3 abs: the cached and uncached paths sum the same products in different orders.
"""

from __future__ import annotations

import random

import pytest
import torch

from rocmforge.attention import build_metadata, get_backend
from rocmforge.kernels.reference_attention import ref_attention_varlen


def _run_chunks(q, k, v, chunks, *, block_size, window, softcap, seed):
    """Feed each sequence's tokens through the torch backend in `chunks` steps; outputs in token order."""
    hkv, d = k[0].shape[1], k[0].shape[2]
    lens = [x.shape[0] for x in q]
    need = sum(-(-n // block_size) for n in lens)
    pool = list(range(need + 3))
    random.Random(seed).shuffle(pool)
    tables = [[pool.pop() for _ in range(-(-n // block_size))] for n in lens]
    shape = (need + 3, block_size, hkv, d)
    cache = (torch.full(shape, float("nan")), torch.full(shape, 7.0))  # unwritten slots must never be read
    backend = get_backend("torch")
    outs = [[] for _ in lens]
    done = [0] * len(lens)
    for step in chunks:  # step: new tokens per sequence this step (0 = idle)
        active = [s for s, n in enumerate(step) if n]
        meta = build_metadata([step[s] for s in active], [done[s] for s in active],
                              [tables[s] for s in active], block_size, [cache], "cpu",
                              logits="all")  # fmt: skip
        new = [slice(done[s], done[s] + step[s]) for s in active]
        qkv = [torch.cat([t[s][sl] for s, sl in zip(active, new)]) for t in (q, k, v)]
        o = backend.forward(*qkv, cache, meta, scale=0.3, sliding_window=window, softcap=softcap)
        for s, part in zip(active, o.split([step[s] for s in active])):
            outs[s].append(part)
            done[s] += step[s]
    return [torch.cat(x) for x in outs]


def _softcap_twin(q, k, v, *, scale, window, softcap):  # float64, one sequence, GQA by repetition
    L, hq, _ = q.shape
    g = hq // k.shape[1]
    kk, vv = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    s = torch.einsum("lhd,jhd->hlj", q.double(), kk) * scale
    s = softcap * torch.tanh(s / softcap)
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    ok = (j <= i) & ((j > i - window) if window else True)
    s = s.masked_fill(~ok, float("-inf"))
    return torch.einsum("hlj,jhd->lhd", s.softmax(-1), vv)


@pytest.mark.parametrize("hq,hkv", [(6, 2), (4, 1), (3, 3)])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_backend_chunked_matches_full(hq, hkv, window, softcap):
    g = torch.Generator().manual_seed(hq * 10 + hkv)
    lens = [23, 9, 31]
    q = [torch.randn(n, hq, 16, generator=g) for n in lens]
    k = [torch.randn(n, hkv, 16, generator=g) for n in lens]
    v = [torch.randn(n, hkv, 16, generator=g) for n in lens]
    # step plans: a mixed batch (prefill chunks next to one-token decodes), sequences joining late
    chunks = [(10, 9, 0), (1, 0, 12), (5, 0, 1), (1, 0, 1), (6, 0, 17)]
    assert [sum(c[s] for c in chunks) for s in range(3)] == lens
    got = _run_chunks(q, k, v, chunks, block_size=4, window=window, softcap=softcap, seed=1)
    for s in range(3):
        if softcap is None:
            cu = torch.tensor([0, lens[s]], dtype=torch.int32)
            want = ref_attention_varlen(q[s], k[s], v[s], cu_seqlens_q=cu, cu_seqlens_k=cu,
                                        max_seqlen_q=lens[s], scale=0.3, causal=True,
                                        sliding_window=window)  # fmt: skip
        else:
            want = _softcap_twin(q[s], k[s], v[s], scale=0.3, window=window, softcap=softcap).float()
        torch.testing.assert_close(got[s], want, atol=1e-5, rtol=1e-5)


def test_build_metadata_slots_and_errors():
    kv = [(torch.zeros(8, 4, 1, 2), torch.zeros(8, 4, 1, 2))]
    meta = build_metadata([3, 1], [2, 5], [[6, 1], [3, 0]], 4, kv, "cpu")
    # seq 0: positions 2, 3, 4 -> block 6 offsets 2, 3, then block 1 offset 0
    # seq 1: position 5 -> block 0 offset 1
    assert meta.slot_mapping.tolist() == [26, 27, 4, 1]
    assert meta.query_start_loc.tolist() == [0, 3, 4] and meta.seq_lens.tolist() == [5, 6]
    assert meta.logits_indices.tolist() == [2, 3]
    with pytest.raises(ValueError, match="block table has 1"):
        build_metadata([5], [0], [[0]], 4, kv, "cpu")
    with pytest.raises(ValueError, match="outside the cache"):
        build_metadata([1], [0], [[9]], 4, kv, "cpu")


PROMPT = [1, 9690, 314, 260, 1345, 30, 2, 198, 1, 4093, 198, 504, 2365, 282, 4649, 314, 4561, 30, 378, 2365,
          282, 5484, 314, 17728, 28, 284, 260, 2365, 282, 8300, 314, 2, 198, 1, 520, 9531, 198, 504, 1017,
          282]  # fmt: skip


@pytest.fixture(scope="module")
def full_logits(smollm2, make_session):
    return make_session(smollm2.model, smollm2.config).step([(0, PROMPT)], logits="all")  # (T, vocab)


def test_chunked_prefill_then_decode_equals_full_forward(smollm2, full_logits, make_session):
    sess = make_session(smollm2.model, smollm2.config, block_size=8, seed=3)
    rows = [sess.step([(0, PROMPT[:17])], logits="all"), sess.step([(0, PROMPT[17:30])], logits="all")]
    rows += [sess.step([(0, [t])]) for t in PROMPT[30:]]
    got = torch.cat(rows)
    assert got.shape == full_logits.shape
    torch.testing.assert_close(got, full_logits, atol=2e-3, rtol=0)
    assert torch.equal(got.argmax(-1), full_logits.argmax(-1))


def test_two_sequences_in_one_batch_equal_each_alone(smollm2, full_logits, make_session):
    other = PROMPT[::-1][:25]
    alone = make_session(smollm2.model, smollm2.config).step([(0, other)], logits="all")
    sess = make_session(smollm2.model, smollm2.config, block_size=16, seed=11)
    sess.step([(0, PROMPT[:20])])
    # sequence 0 continues with a 20-token chunk while sequence 1 prefills from scratch
    both = sess.step([(0, PROMPT[20:]), (1, other)], logits="all")
    torch.testing.assert_close(both[:20], full_logits[20:], atol=2e-3, rtol=0)
    torch.testing.assert_close(both[20:], alone, atol=2e-3, rtol=0)
    # then one decode step each, batched: the same as the next rows of each alone
    last = sess.step([(1, [PROMPT[5]]), (0, [PROMPT[6]])])
    ref0 = make_session(smollm2.model, smollm2.config).step([(0, PROMPT + [PROMPT[6]])])[0]
    ref1 = make_session(smollm2.model, smollm2.config).step([(0, other + [PROMPT[5]])])[0]
    torch.testing.assert_close(last, torch.stack([ref1, ref0]), atol=2e-3, rtol=0)


def test_block_layout_does_not_matter(smollm2, full_logits, make_session):
    for block_size, seed in [(1, 5), (32, 7)]:
        sess = make_session(smollm2.model, smollm2.config, num_blocks=64 if block_size == 32 else 128,
                       block_size=block_size, seed=seed)  # fmt: skip
        got = sess.step([(0, PROMPT)], logits="all")
        torch.testing.assert_close(got, full_logits, atol=2e-3, rtol=0)
        got = torch.cat([sess.step([(1, PROMPT[:3])]), *[sess.step([(1, [t])]) for t in PROMPT[3:8]]])
        torch.testing.assert_close(got, full_logits[[2, 3, 4, 5, 6, 7]], atol=2e-3, rtol=0)
