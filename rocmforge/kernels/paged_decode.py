"""Paged decode attention: one new query token per sequence over its paged K/V cache.

For sequence s with L = seq_lens[s] cached tokens (the query sits at position p = L - 1) and query
head h reading KV head g = h // G (G = Hq / Hkv):

    s_j   = scale * q[s, h] . k[s, j, g]          (optionally softcap * tanh(s_j / softcap))
    out   = sum_j softmax(s)_j v[s, j, g]          over j in [lo, L), lo = max(0, L - W) with a window W

Split-K ("flash decoding"): [lo, L) is cut into `num_splits` chunks of whole BLOCK_N tiles; program
(s, g, i) runs an online softmax over chunk i and writes, per query head, the partial max m_i (base 2),
the partial sum l_i = sum exp2(t_j - m_i) and the unnormalised acc_i = sum exp2(t_j - m_i) v_j. The
split of (s, g) that finishes last (an arrival counter, arrival.py) combines them, in split order and
CH splits a step (a running max over the steps): M = max_i m_i,
out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i: no second kernel. At many splits on CUDA
(separate_combine) a second launch does the same sums instead, one program per (head, 32 of D)
reading all of that head's splits at once.
Chunks past L are empty (m, l, acc) = (-inf, 0, 0) and the combine skips them (it reads only the first
ceil((L - lo) / chunk)); a sequence with L = 0 gets zeros.

GQA: a program owns one KV head and all G query heads reading it, so each K/V tile is loaded once and
the scores are a (G, BLOCK_N) tensor-core product (G padded to 16 rows: the padding is free, decode is
bound by K/V bytes). Token j lives in page block_tables[s, j // block_size] at offset j % block_size.
An fp8 (e4m3) cache is decoded to q's dtype right after each load (KV_FP8), then as below.
Math is fp32; with bf16/fp16 caches the scores are bf16/fp16 tensor-core products with fp32
accumulation and the probabilities are rounded to the cache dtype for P @ V, as in flash attention.

RDNA (wave32 WMMA) keeps both products off the matrix cores (`DOT=False`): Triton's WMMA layouts of the
(16, D) operands need more than the 256 VGPRs a lane has at D >= 128 and spill to scratch, while decode
is bound by K/V bytes, not FLOPs. There the scores are a broadcast multiply and reduce over D,
s = sum_d q[g, None, d] * k[None, n, d], and P @ V likewise over n, in fp32 on the same rounded p; the
group is padded only to a power of two and BLOCK_N is sized so the (G, BLOCK_N, D) product fits.
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from rocmforge.cache.kv_cache import FP8_DTYPES
from rocmforge.kernels.arch import Arch, current_arch, sm_count
from rocmforge.kernels.arrival import split_counters


@triton.jit
def _paged_decode_split_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, seq_lens_ptr, m_ptr, l_ptr, acc_ptr, out_ptr, cnt_ptr,
    scale, softcap, window, num_splits,
    stride_qs, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_bts, stride_os, stride_oh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, UPCAST: tl.constexpr, DOT: tl.constexpr,
    KV_FP8: tl.constexpr, G2: tl.constexpr, CH: tl.constexpr, OFF64: tl.constexpr, COMBINE: tl.constexpr,
):
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    L = tl.load(seq_lens_ptr + seq)
    lo = 0
    if USE_WINDOW:
        lo = tl.maximum(L - window, 0)
    chunk = tl.cdiv(tl.cdiv(L - lo, num_splits), BLOCK_N) * BLOCK_N
    start = lo + split * chunk
    end = tl.minimum(start + chunk, L)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_g = offs_g < GROUP
    mask_d = offs_d < HEAD_DIM
    heads = kvh * GROUP + offs_g  # (GROUP_PAD,)
    q = tl.load(q_ptr + seq * stride_qs + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_g[:, None] & mask_d[None, :], other=0.0)  # (GROUP_PAD, BLOCK_D)
    if not KV_FP8:  # NOTE: an fp8 cache is decoded to q's dtype instead (below)
        q = q.to(k_ptr.dtype.element_ty)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, BLOCK_D], tl.float32)
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bts
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + offs_n
        mask_n = pos < end
        page = tl.load(bt_row + pos // PAGE, mask=mask_n, other=0)
        if OFF64:  # NOTE: int32 offsets when the cache holds < 2^31 elements: the (BLOCK_N, D) offset
            page = page.to(tl.int64)  # tiles take 20-55 fewer registers (AOT, D=128, sm80 / sm90)
        tok = pos % PAGE
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (page * stride_kb + tok * stride_kt + kvh * stride_kh)[:, None] + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_ptr + (page * stride_vb + tok * stride_vt + kvh * stride_vh)[:, None] + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        if KV_FP8:
            k = k.to(q.dtype)
            v = v.to(q.dtype)
        if not DOT:  # (GROUP_PAD, BLOCK_N, BLOCK_D) products reduced over d, fp32
            s = tl.sum(q.to(tl.float32)[:, None, :] * k.to(tl.float32)[None, :, :], 2)
        elif UPCAST:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))  # (GROUP_PAD, BLOCK_N) fp32
        s = s * scale
        if USE_SOFTCAP:
            # tanh(x) = 1 - 2 / (exp(2x) + 1), exact at +-inf, no libdevice call
            s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0))
        s = tl.where(mask_n[None, :], s * 1.4426950408889634, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if not DOT:  # same rounding of p, (GROUP_PAD, BLOCK_N, BLOCK_D) reduced over n
            pv = p.to(v.dtype).to(tl.float32)
            acc = acc * alpha[:, None] + tl.sum(pv[:, :, None] * v.to(tl.float32)[None, :, :], 1)
        elif UPCAST:  # same rounding of p as the tensor-core path, then exact fp32 products
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32),
                                                input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    if not SPLIT:
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + seq * stride_os + heads[:, None] * stride_oh + offs_d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=mask_g[:, None] & mask_d[None, :])
    else:
        base = (seq * (GROUP * tl.num_programs(1)) + heads) * num_splits  # (GROUP_PAD,) split 0's row
        mask_gd = mask_g[:, None] & mask_d[None, :]
        tl.store(m_ptr + base + split, m_i, mask=mask_g)
        tl.store(l_ptr + base + split, l_i, mask=mask_g)
        tl.store(acc_ptr + (base + split)[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=mask_gd)
    if SPLIT and COMBINE:
        # the last split of (seq, kvh) to arrive combines all of them (arrival.py): no reduce launch
        tl.debug_barrier()
        slot = seq * tl.num_programs(1) + kvh
        if tl.atomic_add(cnt_ptr + slot, 1, sem="acq_rel") == num_splits - 1:
            # only the splits that held tokens (graphs size num_splits for max_model_len), CH at a time
            # with all their loads in flight: a split at a time cost one L2 round trip each (B1 L4k at
            # 64 splits: 42 us on an H200). .cg reads L2, never a stale L1 line of another's store.
            used = tl.where(chunk > 0, tl.cdiv(L - lo, tl.maximum(chunk, 1)), 0)
            offs_c = tl.arange(0, G2)
            mask_c = offs_c < GROUP
            heads_c = kvh * GROUP + offs_c  # (G2,)
            rows = (seq * (GROUP * tl.num_programs(1)) + heads_c) * num_splits
            offs_i = tl.arange(0, CH)
            m_run = tl.full([G2], float("-inf"), tl.float32)
            den = tl.zeros([G2], tl.float32)
            o = tl.zeros([G2, BLOCK_D], tl.float32)
            for i0 in range(0, used, CH):  # in split order, whatever the arrival order: deterministic
                mask_s = mask_c[:, None] & (i0 + offs_i < used)[None, :]  # (G2, CH)
                idx = rows[:, None] + i0 + offs_i[None, :]
                m_c = tl.load(m_ptr + idx, mask=mask_s, other=float("-inf"), cache_modifier=".cg")
                l_c = tl.load(l_ptr + idx, mask=mask_s, other=0.0, cache_modifier=".cg")
                a_c = tl.load(acc_ptr + idx[:, :, None] * HEAD_DIM + offs_d[None, None, :],
                              mask=mask_s[:, :, None] & mask_d[None, None, :], other=0.0,
                              cache_modifier=".cg")  # (G2, CH, BLOCK_D)
                m_new = tl.maximum(m_run, tl.max(m_c, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all empty so far: weights 0
                alpha = tl.exp2(m_run - m_safe)
                w = tl.exp2(m_c - m_safe[:, None])  # (G2, CH); empty splits: 2^-inf = 0
                den = den * alpha + tl.sum(w * l_c, 1)
                o = o * alpha[:, None] + tl.sum(w[:, :, None] * a_c, 1)
                m_run = m_new
            o = o / tl.where(den == 0.0, 1.0, den)[:, None]
            tl.store(out_ptr + seq * stride_os + heads_c[:, None] * stride_oh + offs_d[None, :],
                     o.to(out_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_d[None, :])
            tl.store(cnt_ptr + slot, 0)


@triton.jit
def _paged_decode_reduce_kernel(
    m_ptr, l_ptr, acc_ptr, seq_lens_ptr, out_ptr, window, num_splits, stride_os, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, NS: tl.constexpr,
    DS: tl.constexpr, USE_WINDOW: tl.constexpr,
):
    """The split combine as its own launch (many splits: see `separate` in paged_decode_attention):
    program (row = seq * Hq + head, d-block) reads that head's used splits at once, NS >= num_splits."""
    row = tl.program_id(0)
    seq = row // NUM_HEADS
    L = tl.load(seq_lens_ptr + seq)
    lo = 0
    if USE_WINDOW:
        lo = tl.maximum(L - window, 0)
    chunk = tl.cdiv(tl.cdiv(L - lo, num_splits), BLOCK_N) * BLOCK_N  # as the split kernel cuts [lo, L)
    used = tl.where(chunk > 0, tl.cdiv(L - lo, tl.maximum(chunk, 1)), 0)
    offs_s = tl.arange(0, NS)
    mask_s = offs_s < used
    offs_d = tl.program_id(1) * DS + tl.arange(0, DS)
    mask_d = offs_d < HEAD_DIM
    m = tl.load(m_ptr + row * num_splits + offs_s, mask=mask_s, other=float("-inf"))  # (NS,)
    lsum = tl.load(l_ptr + row * num_splits + offs_s, mask=mask_s, other=0.0)
    a = tl.load(acc_ptr + (row * num_splits + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                mask=mask_s[:, None] & mask_d[None, :], other=0.0)  # (NS, DS)
    big = tl.max(m, 0)
    w = tl.exp2(m - tl.where(big == float("-inf"), 0.0, big))  # empty splits: 2^-inf = 0
    den = tl.sum(w * lsum, 0)
    o = tl.sum(w[:, None] * a, 0) / tl.where(den == 0.0, 1.0, den)
    tl.store(out_ptr + seq * stride_os + (row % NUM_HEADS) * stride_oh + offs_d,
             o.to(out_ptr.dtype.element_ty), mask=mask_d)


# ---- per-arch configs ---------------------------------------------------------------------------------

def decode_config(arch: Arch, head_dim: int, group: int = 16) -> dict:
    """Tile of BLOCK_N tokens per step and the product path. NOTE: AMD's 64 KiB LDS holds K and V tiles
    for one stage of 32 tokens at D=256, so CDNA/RDNA use smaller tiles and a single-stage pipeline.
    RDNA: no matrix cores (see the module docstring); 8 waves and BLOCK_N such that the
    (group_pad, BLOCK_N, D) fp32 product is <= 64 values a lane (AOT: 94-232 VGPRs, no spills)."""
    big = head_dim > 128
    if arch.backend == "cuda":
        # NOTE: 64-token tiles at D=128 spill with 4 warps (sm90 24-48 B, sm80 32-72 B of stack in the
        # AOT compile, even with int32 offsets); 8 warps fit but a program then holds half an SM's
        # registers: on an H200 B64 L4k ran 3.2 TB/s against 4.3 with 4 warps (results/kernels_h200.md).
        # 32-token tiles with 4 warps compile clean and ran 3.9 at B32 L4k (64/8/3: 3.3).
        return dict(BLOCK_N=64 if head_dim <= 64 else 32, num_warps=4,
                    num_stages=2 if big else 3, DOT=True)
    if arch.is_rdna:
        gp, d = triton.next_power_of_2(group), triton.next_power_of_2(head_dim)
        return dict(BLOCK_N=max(4, min(32, 64 * 32 * 8 // (gp * d))), num_warps=8, num_stages=1, DOT=False)
    if arch.backend == "hip":
        return dict(BLOCK_N=16 if head_dim > 64 else 32, num_warps=4, num_stages=1, DOT=True)
    return dict(BLOCK_N=16, num_warps=4, num_stages=1, DOT=True)  # interpreter: small tiles exercise the loop


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_len: int, num_sms: int, block_n: int) -> int:
    """About 4 (seq, kv_head, split) programs per SM, rounded down (whole waves: on an H200 B32 L4k ran
    4.2 TB/s with 2 splits, 3.6 with 3), never a split shorter than one tile, at most 64."""
    base = num_seqs * num_kv_heads
    if base >= 2 * num_sms:
        return 1
    want = max(1, (4 * num_sms) // base)
    by_len = max(1, triton.cdiv(max_len, block_n))
    return max(1, min(want, by_len, 64))


def _group_pad(group: int, dot: bool) -> int:
    """Query heads per program padded to a power of two; tl.dot needs at least 16 rows."""
    return max(16 if dot else 1, triton.next_power_of_2(group))


SEPARATE_SPLITS = 32  # split counts from here on combine in their own launch (CUDA)
_REDUCE_DS = 32  # head-dim elements per reduce program


def _combine_tile(group: int, block_d: int, num_warps: int) -> dict:
    """The in-kernel split combine's tile: G2 = the group to a power of two (no tl.dot there, so no
    16-row padding), CH splits per step such that a (G2, CH, BLOCK_D) fp32 tile is 32 values a lane."""
    g2 = triton.next_power_of_2(group)
    ch = max(1, min(64, 32 * 32 * num_warps // (g2 * block_d)))
    return dict(G2=g2, CH=1 << (ch.bit_length() - 1))


def separate_combine(arch: Arch, num_splits: int, head_dim: int) -> bool:
    """Whether the splits combine in a second launch rather than in the last split to arrive. On an
    H200 (GQA 32q/8kv, D=128, B1, benchmarks/results/kernels_h200.md) at 64 splits L4k the in-kernel
    combine ran 13.1 us with 16 splits a step (the default 8: 14.7) and a second launch 11.4 (L16k:
    25.6 / 27.7 vs 24.8): one program reading 64 splits of 4 heads from L2 outlasts a launch whose
    128 programs read them in parallel. Off CUDA and below D=128 unmeasured: in-kernel (NOTE: the
    split kernel without its combine spills 16 B at D=64, G=16 on sm90 in the AOT compile)."""
    return arch.backend == "cuda" and num_splits >= SEPARATE_SPLITS and head_dim >= 128


def paged_decode_attention(
    q: torch.Tensor,  # (S, Hq, D)
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    seq_lens: torch.Tensor,  # (S,) int32, >= 0; the query is at position seq_lens - 1
    *,
    scale: float,
    sliding_window: int | None = None,
    softcap: float | None = None,
    num_splits: int | None = None,
    config: dict | None = None,  # override decode_config(): BLOCK_N, num_warps, num_stages, DOT; CH, SEPARATE
) -> torch.Tensor:  # (S, Hq, D) in q.dtype
    """Decode attention over a paged cache; `num_splits` defaults to a choice from batch, heads, the
    block table's capacity (an upper bound on length: no host sync) and the SM count."""
    S, Hq, D = q.shape
    NB, PAGE, Hkv, Dk = k_cache.shape
    assert v_cache.shape == k_cache.shape and Dk == D, f"cache {tuple(k_cache.shape)} vs q {tuple(q.shape)}"
    assert Hq % Hkv == 0, f"{Hq} query heads are not a multiple of {Hkv} KV heads"
    assert q.dtype in (torch.float16, torch.bfloat16, torch.float32), q.dtype
    fp8 = k_cache.dtype in FP8_DTYPES
    assert k_cache.dtype == v_cache.dtype and (fp8 or k_cache.dtype in (torch.float16, torch.bfloat16,
                                                                        torch.float32)), k_cache.dtype
    assert not fp8 or q.dtype != torch.float32, "an fp8 cache takes fp16/bf16 q"
    assert block_tables.dtype == torch.int32 and block_tables.shape[0] == S, "block_tables: (S, n) int32"
    assert seq_lens.dtype == torch.int32 and seq_lens.shape == (S,), "seq_lens must be (S,) int32"
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1, "head_dim not contiguous"
    assert block_tables.stride(1) == 1
    assert sliding_window is None or sliding_window > 0, "sliding_window must be positive"
    G = Hq // Hkv
    cfg = {**decode_config(current_arch(q.device), D, G), **(config or {})}
    block_n = cfg["BLOCK_N"]
    if num_splits is None:
        max_len = block_tables.shape[1] * PAGE
        if sliding_window is not None:
            max_len = min(max_len, sliding_window)
        num_splits = choose_num_splits(S, Hkv, max_len, sm_count(q.device), block_n)
    out = torch.empty_like(q)
    separate = cfg.get("SEPARATE", separate_combine(current_arch(q.device), num_splits, D)) and num_splits > 1
    if num_splits > 1:
        m = torch.empty(S, Hq, num_splits, dtype=torch.float32, device=q.device)
        lsum = torch.empty_like(m)
        acc = torch.empty(S, Hq, num_splits, D, dtype=torch.float32, device=q.device)
        cnt = seq_lens if separate else split_counters(q.device, S * Hkv)
    else:
        m = lsum = acc = out  # unused: the split kernel writes the output directly
        cnt = seq_lens
    _paged_decode_split_kernel[(S, Hkv, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, m, lsum, acc, out, cnt,
        float(scale), float(softcap or 1.0), int(sliding_window or 0), num_splits,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=G, GROUP_PAD=_group_pad(G, cfg["DOT"]), HEAD_DIM=D,
        BLOCK_D=max(16, triton.next_power_of_2(D)), PAGE=PAGE, BLOCK_N=block_n, SPLIT=num_splits > 1,
        USE_WINDOW=sliding_window is not None, USE_SOFTCAP=softcap is not None,
        # NOTE: triton 3.9's interpreter multiplies bf16 bit patterns as integers in tl.dot, so on CPU
        # the dots run in fp32 on upcast operands (bf16 x bf16 products are exact in fp32 anyway).
        UPCAST=k_cache.dtype == torch.float32 or q.device.type == "cpu", DOT=cfg["DOT"],
        KV_FP8=fp8, **{**_combine_tile(G, max(16, triton.next_power_of_2(D)), cfg["num_warps"]),
                       **{k: cfg[k] for k in ("CH",) if k in cfg}},
        OFF64=max(k_cache.numel(), v_cache.numel()) >= 2**31, COMBINE=not separate,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if separate:
        _paged_decode_reduce_kernel[(S * Hq, triton.cdiv(D, _REDUCE_DS))](
            m, lsum, acc, seq_lens, out, int(sliding_window or 0), num_splits, out.stride(0), out.stride(1),
            NUM_HEADS=Hq, HEAD_DIM=D, BLOCK_N=block_n, NS=triton.next_power_of_2(num_splits), DS=_REDUCE_DS,
            USE_WINDOW=sliding_window is not None, num_warps=4)
    return out


_SPLIT_SIG_INTS = ("scale", "softcap", "window", "num_splits", "stride_qs", "stride_qh", "stride_kb",
                   "stride_kt", "stride_kh", "stride_vb", "stride_vt", "stride_vh", "stride_bts", "stride_os",
                   "stride_oh")


def aot_specs(arch: Arch) -> list[dict]:
    """The configs launched on `arch`: bf16/fp16 caches, D in (64, 128, 256), page 16, G in (4, 16)."""
    specs = []
    combos = list(itertools.product(("bf16", "fp16"), (64, 128, 256), (4, 16)))
    if arch.is_hopper:  # fp8 e4m3 caches (sm89+): bf16 q, D=128
        combos += [("fp8", 128, 4), ("fp8", 128, 16)]
    combos = [(dt, D, G, False) for dt, D, G in combos] + [("bf16", D, 16, True) for D in (64, 128, 256)]
    for dt, D, G, off64 in combos:  # off64: caches of 2^31 elements or more (64-bit offsets)
        cfg = decode_config(arch, D, G)
        kdt = "fp8e4nv" if dt == "fp8" else dt
        sig = {"q_ptr": "*bf16" if dt == "fp8" else f"*{dt}", "k_ptr": f"*{kdt}", "v_ptr": f"*{kdt}",
               "out_ptr": "*bf16" if dt == "fp8" else f"*{dt}"}
        sig.update(bt_ptr="*i32", seq_lens_ptr="*i32", m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32",
                   cnt_ptr="*i32")
        sig.update({n: "fp32" if n in ("scale", "softcap") else "i32" for n in _SPLIT_SIG_INTS})
        const = dict(GROUP=G, GROUP_PAD=_group_pad(G, cfg["DOT"]), HEAD_DIM=D, BLOCK_D=D, PAGE=16,
                     BLOCK_N=cfg["BLOCK_N"], SPLIT=True, USE_WINDOW=False, USE_SOFTCAP=False,
                     UPCAST=False, DOT=cfg["DOT"], KV_FP8=dt == "fp8",
                     **_combine_tile(G, D, cfg["num_warps"]), OFF64=off64, COMBINE=True)
        sig.update({n: "constexpr" for n in const})
        sig = {n: sig[n] for n in _paged_decode_split_kernel.arg_names}  # argument order
        name = f"paged_decode_split_{dt}_d{D}_g{G}{'_off64' * off64}"
        specs.append(dict(name=name, fn=_paged_decode_split_kernel,
                          signature=sig, constexprs=const, num_warps=cfg["num_warps"],
                          num_stages=cfg["num_stages"]))
        if separate_combine(arch, SEPARATE_SPLITS, D) and dt == "bf16" and not off64:  # its split half
            specs.append({**specs[-1], "name": name + "_nocombine",
                          "constexprs": {**const, "COMBINE": False}})
    if separate_combine(arch, SEPARATE_SPLITS, 128):
        for D, ns in itertools.product((128, 256), (32, 64)):
            sig = dict(m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32", seq_lens_ptr="*i32", out_ptr="*bf16",
                       window="i32", num_splits="i32", stride_os="i32", stride_oh="i32")
            const = dict(NUM_HEADS=32, HEAD_DIM=D, BLOCK_N=decode_config(arch, D)["BLOCK_N"], NS=ns,
                         DS=_REDUCE_DS, USE_WINDOW=False)
            sig.update({n: "constexpr" for n in const})
            specs.append(dict(name=f"paged_decode_reduce_d{D}_ns{ns}", fn=_paged_decode_reduce_kernel,
                              signature=sig, constexprs=const, num_warps=4, num_stages=1))
    return specs


__all__ = ["paged_decode_attention", "choose_num_splits", "decode_config", "separate_combine", "aot_specs"]
