"""The "triton" attention backend against the "torch" backend on the same random inputs and caches.

Runs natively on a GPU, or on CPU under TRITON_INTERPRET=1. Each case builds one step of a flat batch
(per sequence: tokens already cached, new tokens), fills the cached positions with random K/V and every
other cache slot with NaN (a stray read of a slot no sequence owns shows up as NaN), then runs both
backends on their own copy of the cache and compares the outputs and the written caches.

Tolerances: both backends see the same fp16/bf16 inputs. The torch backend attends in fp32 and rounds
the output once; the kernels accumulate in fp32 but round the probabilities to the input dtype before
P @ V (bf16: 8 mantissa bits, fp16: 11) and round the output once. With randn inputs |out| <~ 3, so
bf16 atol 2e-2 / rtol 1.6e-2 and fp16 atol 4e-3 / rtol 4e-3 (one output ulp near 2-4 is 2e-3 in fp16),
plus a relative Frobenius error < 1e-2 (bf16) / 2e-3 (fp16). fp32 decode runs fp32 ("ieee") dots: only
the summation order differs, 1e-5. The cache store is a copy: caches must be bit-equal.
"""

from __future__ import annotations

import logging
import os
import random

import pytest
import torch

from rocmforge.attention import build_metadata, get_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
TOL = {BF16: (2e-2, 1.6e-2, 1e-2), FP16: (4e-3, 4e-3, 2e-3), FP32: (1e-5, 1e-5, 1e-5)}
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels need a GPU or TRITON_INTERPRET=1 (set by `make test`)")
LOGGER = "rocmforge.attention.triton_backend"


def make_step(query_lens, context_lens, *, hq, hkv, d, dtype, block_size=8, seed=0):
    """Random q/k/v for one step, a NaN cache holding random K/V at every cached position, the metadata."""
    g = torch.Generator().manual_seed(seed)
    lens = [c + n for c, n in zip(context_lens, query_lens)]
    need = sum(-(-n // block_size) for n in lens)
    pool = list(range(need + 2))  # 2 blocks no table names
    random.Random(seed).shuffle(pool)
    tables = [[pool.pop() for _ in range(-(-n // block_size))] for n in lens]
    shape = (need + 2, block_size, hkv, d)
    kc, vc = torch.full(shape, float("nan"), dtype=dtype), torch.full(shape, float("nan"), dtype=dtype)
    slots = torch.tensor([tables[s][p // block_size] * block_size + p % block_size
                          for s, c in enumerate(context_lens) for p in range(c)], dtype=torch.long)
    kc.view(-1, hkv, d)[slots] = torch.randn(len(slots), hkv, d, generator=g).to(dtype)  # cached K/V
    vc.view(-1, hkv, d)[slots] = torch.randn(len(slots), hkv, d, generator=g).to(dtype)
    T = sum(query_lens)
    q, k, v = (torch.randn(T, h, d, generator=g).to(dtype).to(DEVICE) for h in (hq, hkv, hkv))
    kc, vc = kc.to(DEVICE), vc.to(DEVICE)
    meta = build_metadata(query_lens, context_lens, tables, block_size, [(kc, vc)], DEVICE, logits="all")
    return q, k, v, (kc, vc), meta


def run_both(q, k, v, cache, meta, **kw):
    """(triton out, torch out, triton cache, torch cache), each backend on its own copy of the cache."""
    outs = []
    for name in ("triton", "torch"):
        c = tuple(t.clone() for t in cache)
        outs.append((get_backend(name).forward(q, k, v, c, meta, **kw), c))
    (got, c_got), (want, c_want) = outs
    return got, want, c_got, c_want


def assert_close(got, want, dtype):
    atol, rtol, frob = TOL[dtype]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.isfinite(got).all(), "NaN/inf in the output: a stray read of an unowned cache slot"
    rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert rel < frob, f"relative Frobenius error {rel:.2e} >= {frob}"
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


def assert_same_cache(c_got, c_want):
    for a, b in zip(c_got, c_want):
        assert torch.equal(a.isnan(), b.isnan()), "the stores wrote different slots"
        assert torch.equal(a.nan_to_num(), b.nan_to_num()), "the stores wrote different values"


def check(query_lens, context_lens, *, hq, hkv, dtype, window=None, softcap=None, d=16, caplog, seed=0):
    q, k, v, cache, meta = make_step(query_lens, context_lens, hq=hq, hkv=hkv, d=d, dtype=dtype, seed=seed)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got, want, c_got, c_want = run_both(q, k, v, cache, meta, scale=0.3, sliding_window=window,
                                            softcap=softcap)  # fmt: skip
    assert not [r for r in caplog.records if r.name == LOGGER], "a kernel path fell back to torch"
    assert_close(got, want, dtype)
    assert_same_cache(c_got, c_want)


# (Hq, Hkv, dtype): group 1, group 3, MQA; each dtype on a grouped case (the interpreter is slow: not the
# full product)
CASES = [(4, 4, FP16), (6, 2, FP16), (4, 1, FP16), (6, 2, BF16), (4, 1, BF16)]


@pytest.mark.parametrize("hq,hkv,dtype", CASES)
@pytest.mark.parametrize("window", [None, 6])
def test_decode_batch(hq, hkv, window, dtype, caplog):
    # mixed lengths: a first token (nothing cached), a page edge, and lengths over several pages;
    # MQA with two sequences runs split-K (num_splits > 1) on every device
    check([1, 1, 1, 1], [0, 7, 16, 37], hq=hq, hkv=hkv, dtype=dtype, window=window, caplog=caplog)
    check([1, 1], [40, 3], hq=hq, hkv=hkv, dtype=dtype, window=window, caplog=caplog, seed=1)


@pytest.mark.parametrize("window,softcap", [(None, 5.0), (6, 5.0)])
def test_decode_softcap_fp32(window, softcap, caplog):
    check([1, 1, 1], [12, 0, 33], hq=6, hkv=2, dtype=FP32, window=window, softcap=softcap, caplog=caplog)


@pytest.mark.parametrize("hq,hkv,dtype", CASES[:3] + CASES[3:4])
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_batch(hq, hkv, window, dtype, caplog):
    check([13, 1, 40], [0, 0, 0], hq=hq, hkv=hkv, dtype=dtype, window=window, caplog=caplog)


@pytest.mark.parametrize("hq,hkv,dtype", [(6, 2, FP16), (4, 1, BF16)])
@pytest.mark.parametrize("window", [None, 6])
def test_mixed_and_chunked_prefill(hq, hkv, window, dtype, caplog):
    # prefill next to decodes; then prefill chunks over cached context (context > 0), crossing pages
    check([9, 1, 1, 20], [0, 12, 30, 0], hq=hq, hkv=hkv, dtype=dtype, window=window, caplog=caplog)
    check([7, 16, 1], [25, 9, 5], hq=hq, hkv=hkv, dtype=dtype, window=window, caplog=caplog, seed=2)


def test_head_dim_64(caplog):
    check([5, 1], [11, 20], hq=4, hkv=2, d=64, dtype=FP16, window=None, caplog=caplog)
    check([1, 1], [11, 20], hq=4, hkv=2, d=64, dtype=BF16, window=9, caplog=caplog)


@pytest.mark.parametrize("dtype,softcap", [(FP16, 5.0), (FP32, None)])
def test_prefill_fallback_is_logged_once_and_matches(dtype, softcap, caplog):
    """softcap / fp32 prefill: the flash kernel cannot run; the torch path runs and says why, once."""
    q, k, v, cache, meta = make_step([6, 1], [3, 9], hq=4, hkv=2, d=16, dtype=dtype)
    backend, c = get_backend("triton"), tuple(t.clone() for t in cache)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):  # a second layer / step with the same reason logs nothing new
            got = backend.forward(q, k, v, tuple(t.clone() for t in cache), meta, scale=0.3, softcap=softcap)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1 and ("softcap" if softcap else "dtypes") in records[0].getMessage()
    want = get_backend("torch").forward(q, k, v, c, meta, scale=0.3, softcap=softcap)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_value_head_dim_differs_falls_back(caplog):
    """Dv != D (the kernels take one head dim for K and V): decode too runs the torch path, said once."""
    g = torch.Generator().manual_seed(3)
    kc, vc = torch.zeros(4, 8, 1, 16, dtype=FP16), torch.zeros(4, 8, 1, 32, dtype=FP16)
    kc, vc = kc.to(DEVICE), vc.to(DEVICE)
    meta = build_metadata([1, 1], [5, 2], [[2], [0]], 8, [(kc, vc)], DEVICE)
    q, k, v = (torch.randn(2, h, d, generator=g).to(FP16).to(DEVICE) for h, d in ((2, 16), (1, 16), (1, 32)))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got = get_backend("triton").forward(q, k, v, (kc.clone(), vc.clone()), meta, scale=0.3)
    assert [r for r in caplog.records if r.name == LOGGER and "value head dim 32" in r.getMessage()]
    want = get_backend("torch").forward(q, k, v, (kc, vc), meta, scale=0.3)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_decode_splits_cached_per_step():
    """num_splits comes from the longest host length (window-capped) and is computed once per metadata."""
    from rocmforge.attention.triton_backend import decode_num_splits
    from rocmforge.kernels.arch import current_arch, sm_count
    from rocmforge.kernels.paged_decode import choose_num_splits, decode_config

    dev = torch.device(DEVICE)
    cache = [(torch.zeros(20, 8, 1, 16, device=dev), torch.zeros(20, 8, 1, 16, device=dev))]
    meta = build_metadata([1, 1], [100, 20], [list(range(13)), [13, 14, 15]], 8, cache, dev)
    block_n = decode_config(current_arch(dev), 16, 4)["BLOCK_N"]
    for window, longest in ((None, 101), (10, 10)):
        want = choose_num_splits(2, 1, longest, sm_count(dev), block_n)
        kw = dict(num_kv_heads=1, head_dim=16, group=4, sliding_window=window, device=dev)
        assert decode_num_splits(meta, **kw) == want
        meta.seq_lens_cpu = [1, 1]  # a later call in the same step reuses the value, never recomputes
        assert decode_num_splits(meta, **kw) == want
        meta.seq_lens_cpu = [101, 21]
    if dev.type == "cpu":  # 4 "SMs" and 16-key tiles: 2 programs -> 8 wanted, 101 keys -> 7 tiles
        assert decode_num_splits(meta, num_kv_heads=1, head_dim=16, group=4, sliding_window=None,
                                 device=dev) == 7  # fmt: skip


def test_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v, cache, meta = make_step([1], [3], hq=2, hkv=1, d=16, dtype=FP16)
    if q.is_cuda:
        pytest.skip("on a GPU the kernels run without the interpreter; this checks the CPU error only")
    with pytest.raises(ValueError, match="attention_backend='torch'"):
        get_backend("triton").forward(q, k, v, cache, meta, scale=0.3)
