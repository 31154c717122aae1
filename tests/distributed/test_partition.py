"""The TP partition (pure Python): head groups, FFN/vocab ranges and the per-tensor slice table.

The property test checks the partition against its definition, not against itself: every query
head is on exactly one rank, every rank's query heads read only KV heads that rank holds (head q
reads KV head q // g), and the local GQA groups are uniform (the attention kernels assume it).
"""

from __future__ import annotations

import dataclasses

import pytest

from rocmforge.distributed.partition import TPPlan, split_even, split_heads


def test_smollm2_uneven_heads_split_by_kv_groups():
    # 9 q / 3 kv heads over 2 ranks: kv {0, 1} with q 0..5, kv {2} with q 6..8 (the brief's example)
    assert split_heads(9, 3, 2) == [((0, 6), (0, 2)), ((6, 9), (2, 3))]


def test_qwen_and_replicated_kv():
    assert split_heads(14, 2, 2) == [((0, 7), (0, 1)), ((7, 14), (1, 2))]
    # Gemma 3 270M: 4 q / 1 kv over 2 ranks: the KV head is replicated, its q heads split
    assert split_heads(4, 1, 2) == [((0, 2), (0, 1)), ((2, 4), (0, 1))]
    want = [((0, 4), (0, 1)), ((4, 7), (0, 1)), ((7, 11), (1, 2)), ((11, 14), (1, 2))]
    assert split_heads(14, 2, 4) == want


@pytest.mark.parametrize("hq,hkv,world", [(14, 2, 3), (9, 3, 4), (4, 1, 8)])
def test_unsplittable_head_layouts_are_refused_clearly(hq, hkv, world):
    with pytest.raises(ValueError, match="tensor parallel size"):
        split_heads(hq, hkv, world)


@pytest.mark.parametrize("hq,hkv", [(9, 3), (14, 2), (4, 1), (32, 8), (12, 12), (16, 4), (6, 2)])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 6, 8])
def test_head_partition_properties(hq, hkv, world):
    try:
        parts = split_heads(hq, hkv, world)
    except ValueError:
        assert hkv < world and (world % hkv or hq < world)  # refused only where no layout exists
        return
    g = hq // hkv
    owners = [r for r, ((q0, q1), _) in enumerate(parts) for _ in range(q0, q1)]
    assert len(parts) == world and sorted(owners) == owners and len(owners) == hq  # each q head once
    for (q0, q1), (k0, k1) in parts:
        assert q1 > q0 and k1 > k0
        assert all(k0 <= q // g < k1 for q in range(q0, q1))  # its q heads read only its kv heads
        local_groups = [sum(1 for q in range(q0, q1) if q // g == kv) for kv in range(k0, k1)]
        assert len(set(local_groups)) == 1 and sum(local_groups) == q1 - q0  # uniform local GQA


@pytest.mark.parametrize("n,parts,align", [(1536, 2, 32), (4864, 2, 256), (49152, 2, 1), (10, 3, 1),
                                           (7, 7, 1)])  # fmt: skip
def test_split_even(n, parts, align):
    r = split_even(n, parts, align)
    assert r[0][0] == 0 and r[-1][1] == n and all(a[1] == b[0] for a, b in zip(r, r[1:]))
    assert all(s % align == 0 and e > s for s, e in r)
    sizes = [e - s for s, e in r]
    assert max(sizes) - min(sizes) <= align
    with pytest.raises(ValueError):
        split_even(n, n // align + 1, align)


@dataclasses.dataclass(frozen=True)
class _Cfg:  # the ModelConfig fields TPPlan reads
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    v_head_dim: int = 64
    ffn_size: int = 1536
    vocab_size: int = 49152


def test_plan_slices_for_smollm2_rank1():
    p = TPPlan.make(_Cfg(), 1, 2, ffn_align=32)
    assert (p.q_heads, p.kv_heads, p.ffn, p.vocab) == ((6, 9), (2, 3), (768, 1536), (24576, 49152))
    assert p.param_slice("blk.3.attn_q.weight") == (0, 6 * 64, 9 * 64)
    assert p.param_slice("blk.3.attn_k.bias") == (0, 2 * 64, 3 * 64)
    assert p.param_slice("blk.3.attn_v.weight") == (0, 2 * 64, 3 * 64)
    assert p.param_slice("blk.3.attn_output.weight") == (1, 6 * 64, 9 * 64)
    assert p.param_slice("blk.3.ffn_up.weight") == (0, 768, 1536)
    assert p.param_slice("blk.3.ffn_down.weight") == (1, 768, 1536)
    assert p.param_slice("token_embd.weight") == (0, 24576, 49152)
    assert p.param_slice("output.weight") == (0, 24576, 49152)
    for replicated in ("blk.3.attn_norm.weight", "output_norm.weight", "rope_freqs.weight",
                       "blk.3.attn_q_norm.weight"):  # fmt: skip
        assert p.param_slice(replicated) is None
    assert p.vocab_sizes == (24576, 24576)


def test_ffn_bounds_follow_the_quant_block():
    # Qwen2.5-Coder-0.5B: ffn 4864 = 19 blocks of 256 (ffn_down is Q6_K): 10 / 9 blocks, never a cut block
    cfg = _Cfg(num_heads=14, num_kv_heads=2, ffn_size=4864, vocab_size=151936)
    assert [TPPlan.make(cfg, r, 2, ffn_align=256).ffn for r in (0, 1)] == [(0, 2560), (2560, 4864)]
