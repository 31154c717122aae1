"""Flash-attention prefill kernels vs their torch twins, and the twins vs a float64 naive reference.

Runs natively on a GPU, or on CPU under TRITON_INTERPRET=1 (the Makefile sets it). Memory the kernel
must never read (keys past the last sequence, cache slots past a sequence's length, cache blocks no
table names, table entries past a sequence's pages) holds NaN, so a stray read shows up as NaN.
"""

from __future__ import annotations

import os

import pytest
import torch

from rocmforge.kernels.arch import current_arch
from rocmforge.kernels.flash_attn import flash_attn_paged, flash_attn_varlen, pick_config
from rocmforge.kernels.reference_attention import ref_attention_paged, ref_attention_varlen

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16, FP16 = torch.bfloat16, torch.float16
needs_kernel = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels need a GPU or TRITON_INTERPRET=1 (set by `make test`)")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="long sequences are too slow for the interpreter; GPU only")

# Tolerances, kernel vs twin. The twin runs in fp32 on the same rounded inputs; the kernel rounds the
# probabilities p to the input dtype before the p @ v dot (bf16: 8 mantissa bits, rel. error 2^-9 per
# term; fp16: 2^-12), and both round the output once. With randn inputs |out| <= ~3, so:
#   bf16: a few ulps of 2^-8 relative plus the p rounding, atol 2e-2 / rtol 1.6e-2, ||err||/||ref|| < 1e-2
#   fp16: atol 2e-3 / rtol 2e-3, ||err||/||ref|| < 2e-3
TOL = {BF16: (2e-2, 1.6e-2, 1e-2), FP16: (2e-3, 2e-3, 2e-3)}


def _cu(lens):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def _close(out, ref, dtype):
    atol, rtol, frob = TOL[dtype]
    assert torch.isfinite(out).all(), "kernel left NaN/inf (unwritten output or a stray read)"
    rel = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    assert rel < frob, f"relative Frobenius error {rel:.2e} >= {frob}"
    torch.testing.assert_close(out.float(), ref.float(), atol=atol, rtol=rtol)


def varlen_inputs(qlens, klens, hq, hkv, d, dtype, seed, guard=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(qlens), hq, d, generator=g).to(dtype)  # (Tq, Hq, D)
    k = torch.randn(sum(klens) + guard, hkv, d, generator=g).to(dtype)  # (Tk + guard, Hkv, D)
    v = torch.randn(sum(klens) + guard, hkv, d, generator=g).to(dtype)
    k[sum(klens):] = float("nan")  # guard rows past the last sequence: never read
    v[sum(klens):] = float("nan")
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)


def paged_inputs(qlens, klens, hq, hkv, d, dtype, page, seed):
    """Shuffled block tables over a cache whose unused blocks, padding slots and table tail are NaN."""
    g = torch.Generator().manual_seed(seed)
    pages = [-(-n // page) for n in klens]
    num_blocks = sum(pages) + 3  # two unused blocks + one poison block (the last)
    k_cache = torch.randn(num_blocks, page, hkv, d, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, page, hkv, d, generator=g).to(dtype)
    perm = torch.randperm(num_blocks - 1, generator=g).tolist()
    poison = num_blocks - 1
    tables = torch.full((len(klens), max(pages) + 2), poison, dtype=torch.int32)
    used = set()
    for s, (n, np_) in enumerate(zip(klens, pages)):
        blocks = [perm.pop() for _ in range(np_)]
        tables[s, :np_] = torch.tensor(blocks, dtype=torch.int32)
        used.update(blocks)
        pad = np_ * page - n  # slots past the sequence's length in its last block
        if pad:
            k_cache[blocks[-1], page - pad:] = float("nan")
            v_cache[blocks[-1], page - pad:] = float("nan")
    for b in set(range(num_blocks)) - used:
        k_cache[b] = float("nan")
        v_cache[b] = float("nan")
    q = torch.randn(sum(qlens), hq, d, generator=g).to(dtype)
    seq_lens = torch.tensor(klens, dtype=torch.int32, device=DEVICE)
    return q.to(DEVICE), k_cache.to(DEVICE), v_cache.to(DEVICE), seq_lens, tables.to(DEVICE)


def naive_float64(q, ks, vs, qlens, *, scale, causal, window):
    """Independent reference: per sequence, head and query, explicit positions, float64 softmax."""
    out = torch.empty(q.shape, dtype=torch.float64)
    hq, hkv = q.shape[1], ks[0].shape[1]
    row = 0
    for k, v, q_len in zip(ks, vs, qlens):
        k_len = k.shape[0]
        for i in range(q_len):
            pos = k_len - q_len + i
            keys = [j for j in range(k_len)
                    if (not causal or j <= pos) and (window is None or j > pos - window)]
            for h in range(hq):
                kv = h // (hq // hkv)
                s = (k[keys, kv].double() @ q[row + i, h].double()) * scale  # (n_keys,)
                p = torch.exp(s - s.max())
                out[row + i, h] = (p / p.sum()) @ v[keys, kv].double()
        row += q_len
    return out


LAYOUT_A = ([37, 5, 70], [37, 50, 133])  # prefill, chunked, ragged: not multiples of any block size
LAYOUT_B = ([19, 1], [19, 40])  # short, one single-query chunk
VARLEN_CASES = [
    # causal, (Hq, Hkv), D, dtype, window, layout
    (True, (2, 2), 64, BF16, None, LAYOUT_A),
    (False, (2, 2), 64, FP16, None, LAYOUT_A),
    (True, (6, 2), 128, FP16, None, LAYOUT_A),  # GQA 3
    (False, (6, 2), 128, BF16, None, LAYOUT_B),
    (True, (7, 1), 64, BF16, None, LAYOUT_B),  # GQA 7, MQA
    (True, (16, 2), 64, BF16, None, LAYOUT_B),  # GQA 8
    (True, (4, 1), 64, FP16, 1, LAYOUT_A),  # MQA, window of one key (itself)
    (True, (2, 1), 64, BF16, 5, LAYOUT_A),  # window smaller than every sequence
    (True, (2, 2), 128, BF16, 1000, LAYOUT_A),  # window larger than every sequence
    (False, (2, 1), 64, BF16, 1, LAYOUT_A),
    (False, (2, 2), 64, FP16, 17, LAYOUT_A),
    (True, (2, 1), 256, BF16, None, LAYOUT_B),
]


@needs_kernel
@pytest.mark.parametrize("causal,heads,d,dtype,window,layout", VARLEN_CASES)
def test_varlen_matches_twin(causal, heads, d, dtype, window, layout):
    qlens, klens = layout
    seed = d * 31 + heads[0] * 7 + heads[1] + (window or 0) + causal
    q, k, v = varlen_inputs(qlens, klens, *heads, d, dtype, seed=seed)
    kw = dict(cu_seqlens_q=_cu(qlens), cu_seqlens_k=_cu(klens), max_seqlen_q=max(qlens), scale=d**-0.5,
              causal=causal, sliding_window=window)
    out = flash_attn_varlen(q, k, v, out=torch.full_like(q, float("nan")), **kw)  # poisoned: all written?
    _close(out, ref_attention_varlen(q, k, v, **kw), dtype)


PAGED_CASES = [
    # causal, (Hq, Hkv), D, dtype, window, page, (qlens, klens)
    (True, (4, 2), 64, BF16, None, 16, ([37, 5], [37, 120])),
    (True, (6, 2), 128, FP16, None, 8, ([20, 64], [100, 64])),  # pages smaller than a key tile
    (True, (2, 1), 64, BF16, 24, 32, ([30, 7], [150, 7])),
    (False, (2, 2), 64, FP16, None, 16, ([33], [80])),
]


@needs_kernel
@pytest.mark.parametrize("causal,heads,d,dtype,window,page,layout", PAGED_CASES)
def test_paged_matches_twin(causal, heads, d, dtype, window, page, layout):
    qlens, klens = layout
    q, kc, vc, seq_lens, tables = paged_inputs(qlens, klens, *heads, d, dtype, page, seed=page * 7 + d)
    kw = dict(cu_seqlens_q=_cu(qlens), seq_lens=seq_lens, block_tables=tables, max_seqlen_q=max(qlens),
              scale=d**-0.5, causal=causal, sliding_window=window)
    out = flash_attn_paged(q, kc, vc, out=torch.full_like(q, float("nan")), **kw)
    _close(out, ref_attention_paged(q, kc, vc, **kw), dtype)


@needs_kernel
@pytest.mark.parametrize("paged", [False, True])
def test_tiles_below_the_window_are_never_read(paged):
    """NaN in every key tile below all windows: a kernel that loads and masks them returns NaN (0 * NaN)."""
    d, window, q_len, k_len, page = 64, 16, 20, 300, 16
    block_n = pick_config(current_arch(), d).block_n
    first_pos = k_len - q_len  # the earliest query sees keys > first_pos - window
    dead = ((first_pos - window + 1) // block_n) * block_n  # keys [0, dead) fill whole tiles no query sees
    assert dead >= block_n, "the test needs at least one skippable tile"
    kw = dict(cu_seqlens_q=_cu([q_len]), max_seqlen_q=q_len, scale=d**-0.5, causal=True,
              sliding_window=window)
    if paged:
        q, kc, vc, seq_lens, tables = paged_inputs([q_len], [k_len], 2, 1, d, BF16, page, seed=3)
        ref = ref_attention_paged(q, kc, vc, seq_lens=seq_lens, block_tables=tables, **kw)
        for p in range(dead):
            kc[tables[0, p // page], p % page] = float("nan")
            vc[tables[0, p // page], p % page] = float("nan")
        out = flash_attn_paged(q, kc, vc, seq_lens=seq_lens, block_tables=tables, **kw)
    else:
        q, k, v = varlen_inputs([q_len], [k_len], 2, 1, d, BF16, seed=4)
        ref = ref_attention_varlen(q, k, v, cu_seqlens_k=_cu([k_len]), **kw)
        k[:dead] = float("nan")
        v[:dead] = float("nan")
        out = flash_attn_varlen(q, k, v, cu_seqlens_k=_cu([k_len]), **kw)
    _close(out, ref, BF16)


@needs_gpu
@pytest.mark.parametrize("causal,window", [(True, None), (True, 300), (False, None)])
def test_long_sequences_native(causal, window):
    """Real GPU tile sizes over many tiles: chunked prefill with a long cached prefix, GQA 4, D=128."""
    qlens, klens = [700, 1, 1500], [1900, 64, 1500]
    q, k, v = varlen_inputs(qlens, klens, 8, 2, 128, BF16, seed=11)
    kw = dict(cu_seqlens_q=_cu(qlens), cu_seqlens_k=_cu(klens), max_seqlen_q=max(qlens), scale=128**-0.5,
              causal=causal, sliding_window=window)
    _close(flash_attn_varlen(q, k, v, **kw), ref_attention_varlen(q, k, v, **kw), BF16)


# ---------------------------------------------------------------- twins vs float64 (no kernel needed)

# The twin computes in fp32 on fp32 inputs: far under 1e-5 relative to the float64 reference.
@pytest.mark.parametrize("causal,heads,window", [(True, (6, 2), None), (False, (3, 1), None),
                                                 (True, (4, 4), 5), (False, (2, 1), 3), (True, (2, 1), 1)])
def test_varlen_twin_matches_float64(causal, heads, window):
    qlens, klens = [9, 1, 14], [9, 12, 30]
    q, k, v = (t.float().cpu() for t in varlen_inputs(qlens, klens, *heads, 32, torch.float32, seed=5))
    out = ref_attention_varlen(q, k, v, cu_seqlens_q=_cu(qlens).cpu(), cu_seqlens_k=_cu(klens).cpu(),
                               max_seqlen_q=14, scale=0.3, causal=causal, sliding_window=window)
    ck = [0, 9, 21, 51]
    ks = [k[ck[i]:ck[i + 1]] for i in range(3)]
    vs = [v[ck[i]:ck[i + 1]] for i in range(3)]
    ref = naive_float64(q, ks, vs, qlens, scale=0.3, causal=causal, window=window)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_paged_twin_matches_float64():
    qlens, klens, page = [6, 11], [40, 11], 8
    inputs = paged_inputs(qlens, klens, 4, 2, 32, torch.float32, page, seed=6)
    q, kc, vc, seq_lens, tables = (t.cpu() for t in inputs)
    out = ref_attention_paged(q, kc, vc, cu_seqlens_q=_cu(qlens).cpu(), seq_lens=seq_lens,
                              block_tables=tables, max_seqlen_q=11, scale=0.2, causal=True, sliding_window=9)
    # gather position by position through the table: block tables[s, p // page], slot p % page
    ks = [torch.stack([kc[tables[s, p // page], p % page] for p in range(n)]) for s, n in enumerate(klens)]
    vs = [torch.stack([vc[tables[s, p // page], p % page] for p in range(n)]) for s, n in enumerate(klens)]
    ref = naive_float64(q, ks, vs, qlens, scale=0.2, causal=True, window=9)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_twin_bf16_rounds_only_the_output():
    """bf16 in: fp32 math, one rounding of the output (<= half a bf16 ulp, 2^-9 relative)."""
    qlens, klens = [13], [29]
    q, k, v = (t.cpu() for t in varlen_inputs(qlens, klens, 2, 1, 64, BF16, seed=8))
    out = ref_attention_varlen(q, k, v, cu_seqlens_q=_cu(qlens).cpu(), cu_seqlens_k=_cu(klens).cpu(),
                               max_seqlen_q=13, scale=0.125, causal=True)
    ref = naive_float64(q, [k[:29]], [v[:29]], qlens, scale=0.125, causal=True, window=None)
    err = (out.double() - ref).abs()
    assert (err <= ref.abs() * 2.0**-8 + 1e-6).all(), f"max error {err.max():.3g}"


# ---------------------------------------------------------------- launcher errors


def _small(dtype=BF16, hq=4, hkv=2, d=64):
    q, k, v = varlen_inputs([4], [4], hq, hkv, d, dtype, seed=1, guard=0)
    return q, k, v, dict(cu_seqlens_q=_cu([4]), cu_seqlens_k=_cu([4]), max_seqlen_q=4, scale=0.1)


@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v, kw: (q.float(), k.float(), v.float(), kw), "fp16 or bf16"),
    (lambda q, k, v, kw: (q[..., :48], k[..., :48], v[..., :48], kw), "contiguous last dim|power of two"),
    (lambda q, k, v, kw: (q[:, :3], k, v, kw), "multiple of KV heads"),
    (lambda q, k, v, kw: (q, k, v, {**kw, "cu_seqlens_q": kw["cu_seqlens_q"].long()}), "int32"),
    (lambda q, k, v, kw: (q, k, v, {**kw, "sliding_window": 0}), "sliding_window"),
    (lambda q, k, v, kw: (q, k[:, :, None], v, kw), "shape"),
])
def test_launcher_rejects_bad_inputs(bad, match):
    q, k, v, kw = bad(*_small())
    with pytest.raises(ValueError, match=match):
        flash_attn_varlen(q, k, v, **kw)


def test_head_dim_96_is_refused():
    q, k, v, kw = _small(d=96)
    with pytest.raises(ValueError, match="power of two"):
        flash_attn_varlen(q, k, v, **kw)


@needs_kernel
@pytest.mark.parametrize("paged,causal,window,d", [(False, True, None, 256), (True, True, 24, 256),
                                                   (False, False, None, 128), (True, False, 5, 64)])
def test_split_head_dim_matches_twin(paged, causal, window, d):
    """split_d (RDNA's D=256 config): the head dim in two halves, q re-read per key tile."""
    from rocmforge.kernels.flash_attn import AttnConfig

    cfg = AttnConfig(16, 16, 4, 1, split_d=True)
    qlens, klens = [19, 1], [19, 40]
    if paged:
        q, kc, vc, seq_lens, tables = paged_inputs(qlens, klens, 4, 2, d, BF16, 16, seed=d + 3)
        kw = dict(cu_seqlens_q=_cu(qlens), seq_lens=seq_lens, block_tables=tables, max_seqlen_q=max(qlens),
                  scale=d**-0.5, causal=causal, sliding_window=window)
        out = flash_attn_paged(q, kc, vc, out=torch.full_like(q, float("nan")), config=cfg, **kw)
        ref = ref_attention_paged(q, kc, vc, **kw)
    else:
        q, k, v = varlen_inputs(qlens, klens, 4, 2, d, BF16, seed=d + 5)
        kw = dict(cu_seqlens_q=_cu(qlens), cu_seqlens_k=_cu(klens), max_seqlen_q=max(qlens), scale=d**-0.5,
                  causal=causal, sliding_window=window)
        out = flash_attn_varlen(q, k, v, out=torch.full_like(q, float("nan")), config=cfg, **kw)
        ref = ref_attention_varlen(q, k, v, **kw)
    _close(out, ref, BF16)
