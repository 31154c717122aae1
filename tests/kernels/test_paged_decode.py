"""Paged decode attention: kernel vs its torch twin, twin vs a direct float64 formula.

Tolerances: fp32 caches run fp32 ("ieee") dots, so only summation order differs (1e-5). bf16/fp16 caches
round the probabilities to the cache dtype before P @ V and the output to the cache dtype; both are
~2^-8 (bf16) / 2^-11 (fp16) relative, on outputs of size ~1, hence 2e-2 / 4e-3.
"""

import math

import pytest
import torch

from rocmforge.kernels.arrival import split_counters
from rocmforge.kernels.paged_decode import choose_num_splits, paged_decode_attention
from rocmforge.kernels.reference_ops import paged_decode_attention_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def _setup(S, Hq, Hkv, D, page, lens, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    max_blocks = max(math.ceil(n / page) for n in lens) + 1
    nb = S * max_blocks + 3
    kc = torch.randn(nb, page, Hkv, D, generator=g).to(dtype)
    vc = torch.randn(nb, page, Hkv, D, generator=g).to(dtype)
    bt = torch.randperm(nb, generator=g)[: S * max_blocks].view(S, max_blocks).int()  # scattered pages
    q = torch.randn(S, Hq, D, generator=g).to(dtype)
    to = lambda t: t.to(DEV)
    return to(q), to(kc), to(vc), to(bt), torch.tensor(lens, dtype=torch.int32, device=DEV)


def _direct(q, kc, vc, bt, lens, scale, window, softcap):
    """float64, one (sequence, head) at a time, dot products written out."""
    S, Hq, D = q.shape
    page, Hkv = kc.shape[1], kc.shape[2]
    out = torch.zeros(S, Hq, D, dtype=torch.float64)
    for s in range(S):
        L = int(lens[s])
        js = [j for j in range(L) if window is None or j > (L - 1) - window]
        for h in range(Hq):
            kvh = h // (Hq // Hkv)
            ks = torch.stack([kc[int(bt[s, j // page]), j % page, kvh].double() for j in js])
            vs = torch.stack([vc[int(bt[s, j // page]), j % page, kvh].double() for j in js])
            sc = (ks @ q[s, h].double()) * scale
            if softcap is not None:
                sc = softcap * torch.tanh(sc / softcap)
            w = torch.exp(sc - sc.max())
            out[s, h] = (w[:, None] * vs).sum(0) / w.sum()
    return out


@pytest.mark.parametrize("window,softcap", [(None, None), (7, None), (None, 5.0), (1, None)])
def test_twin_matches_direct_float64(window, softcap):
    q, kc, vc, bt, lens = _setup(2, 6, 2, 16, 4, [13, 5], torch.float32)
    ref = paged_decode_attention_ref(q.cpu().double(), kc.cpu().double(), vc.cpu().double(), bt.cpu(),
                                     lens.cpu(), scale=0.3, sliding_window=window, softcap=softcap,
                                     compute_dtype=torch.float64)
    direct = _direct(q.cpu(), kc.cpu(), vc.cpu(), bt.cpu(), lens.cpu(), 0.3, window, softcap)
    torch.testing.assert_close(ref, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (6, 2), (7, 1), (16, 2), (8, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gqa_ratios(Hq, Hkv, dtype):
    q, kc, vc, bt, lens = _setup(3, Hq, Hkv, 32, 16, [1, 37, 70], dtype)
    out = paged_decode_attention(q, kc, vc, bt, lens, scale=32 ** -0.5, num_splits=3)
    ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=32 ** -0.5)
    torch.testing.assert_close(out.float(), ref.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("num_splits", [1, 2, 5, 12, None])  # 12: more splits than tiles (empty splits)
@pytest.mark.parametrize("window", [None, 1, 19, 500])  # 500: window longer than every sequence
def test_splits_and_windows(num_splits, window):
    q, kc, vc, bt, lens = _setup(3, 8, 2, 64, 16, [3, 45, 97], torch.float16, seed=1)
    out = paged_decode_attention(q, kc, vc, bt, lens, scale=0.125, sliding_window=window,
                                 num_splits=num_splits)
    ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=0.125, sliding_window=window)
    torch.testing.assert_close(out.float(), ref.float(), rtol=4e-3, atol=4e-3)
    # the last-arriving split reset its (seq, kv head) counter: the next launch starts from zero
    assert not split_counters(q.device, 3 * 2)[: 3 * 2].any()


@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("num_splits,window", [(5, None), (12, None), (12, 19), (33, None)])
def test_separate_combine(separate, num_splits, window):
    """The split combine as its own launch (CUDA's choice from SEPARATE_SPLITS splits) and in the last
    split to arrive give the twin's output: empty splits, a window, a sequence with no keys, D=48."""
    q, kc, vc, bt, lens = _setup(3, 8, 2, 48, 16, [0, 45, 97], torch.float16, seed=4)
    out = paged_decode_attention(q, kc, vc, bt, lens, scale=0.15, sliding_window=window,
                                 num_splits=num_splits, config=dict(SEPARATE=separate))
    ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=0.15, sliding_window=window)
    assert torch.all(out[0] == 0)
    torch.testing.assert_close(out.float(), ref.float(), rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("page,D", [(1, 16), (5, 48), (32, 128)])  # odd page sizes, non power-of-two D
def test_page_sizes_and_head_dims(page, D):
    q, kc, vc, bt, lens = _setup(2, 4, 2, D, page, [33, 8], torch.bfloat16, seed=2)
    out = paged_decode_attention(q, kc, vc, bt, lens, scale=D ** -0.5, softcap=3.0)
    ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=D ** -0.5, softcap=3.0)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_empty_sequence_gives_zeros():
    q, kc, vc, bt, lens = _setup(2, 4, 2, 32, 16, [0, 20], torch.float32)
    for ns in (1, 4):
        out = paged_decode_attention(q, kc, vc, bt, lens, scale=0.2, num_splits=ns)
        assert torch.all(out[0] == 0) and torch.isfinite(out).all()
        ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=0.2)
        torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)


def test_num_splits_heuristic():
    assert choose_num_splits(64, 8, 4096, 132, 64) == 1  # 512 programs already fill 132 SMs
    assert choose_num_splits(32, 8, 4096, 132, 64) == 2  # 512 programs: ~4 per SM, rounded down
    assert choose_num_splits(1, 8, 4096, 132, 64) == 64  # batch 1: split the context, at most 64 ways
    assert choose_num_splits(1, 8, 100, 132, 64) == 2  # short context: a split is at least one tile


@pytest.mark.parametrize("Hq,Hkv,D", [(6, 2, 32), (7, 1, 48), (16, 1, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_matrix_core_path(Hq, Hkv, D, dtype):
    """DOT=False (the RDNA configuration): broadcast products reduced in fp32, group padded to 2^k only."""
    q, kc, vc, bt, lens = _setup(3, Hq, Hkv, D, 16, [1, 29, 70], dtype, seed=3)
    cfg = dict(BLOCK_N=8, num_warps=8, num_stages=1, DOT=False)
    for window in (None, 9):
        out = paged_decode_attention(q, kc, vc, bt, lens, scale=D ** -0.5, sliding_window=window,
                                     num_splits=2, config=cfg)
        ref = paged_decode_attention_ref(q, kc, vc, bt, lens, scale=D ** -0.5, sliding_window=window)
        tol = TOL[dtype]
        if q.is_cuda and dtype == torch.float32 and Hq // Hkv >= 16:
            # NOTE: Triton 3.6 on sm90 lowers the 16-row broadcast-reduce to a TF32 MMA (v rounded to a
            # 10-bit mantissa): measured 9.6e-4 even for a 1-key sequence, whose exact output is v. The
            # path is RDNA's (CUDA launches DOT=True), where caches are bf16/fp16 and TF32 is exact.
            tol = 2e-3
        torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)


def test_rdna_config_fits_the_group():
    from rocmforge.kernels.arch import make_arch
    from rocmforge.kernels.paged_decode import decode_config

    rdna = make_arch("hip", "gfx1100", 32)
    for G, D in [(1, 64), (4, 256), (7, 128), (16, 256)]:
        cfg = decode_config(rdna, D, G)
        assert cfg["DOT"] is False and cfg["BLOCK_N"] >= 4
        gp = 1 << (G - 1).bit_length()
        assert gp * cfg["BLOCK_N"] * D <= 64 * 32 * cfg["num_warps"] or cfg["BLOCK_N"] == 4
