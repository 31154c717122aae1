"""Flash-attention prefill: varlen Q against contiguous or paged K/V, online softmax, fp32 accumulate.

For a sequence with q_len queries and k_len keys, query i sits at position p_i = k_len - q_len + i
(bottom-right alignment, so chunked prefill and prefix caching are the same call). It may attend key j
when j <= p_i (causal) and j > p_i - W (sliding window of W keys, the same bound without causal).
Query head h reads KV head h // (Hq // Hkv) (GQA/MQA; K/V are never replicated).

One program owns BLOCK_M queries of one head of one sequence and walks key tiles of BLOCK_N:

    s_j  = (scale * log2 e) * q . k_j                   (fp32 from fp16/bf16 tensor-core dots)
    m'   = max(m, max_j s_j)                            running row max
    l'   = l * 2^(m - m') + sum_j 2^(s_j - m')          running denominator
    acc' = acc * 2^(m - m') + sum_j 2^(s_j - m') v_j    running numerator;   out = acc / l

Key tiles are split by what they need: tiles every query of the block fully sees run without masks;
the causal diagonal, the window's lower edge and the ragged last tile run masked; tiles no query sees
(above the diagonal, below the window) are never visited. Masked entries are -inf against a finite
running max (-1e30), so a row that sees nothing in a tile gets p = 0 and alpha = 1, never NaN.

K/V from an fp8 (e4m3) cache are decoded to q's dtype right after each load (KV_FP8). SPLIT_D (RDNA3's
D=256 config) runs the head dim as two halves, s = q_lo.k_lo + q_hi.k_hi and acc_lo / acc_hi += p v_lo / hi,
re-reading each q half per key tile (L1 hits) instead of holding q in WMMA operand layout all loop long:
that layout is what pushed every D=256 tile past RDNA3's 256 VGPRs.

NOTE: DOT_F32 is set only under TRITON_INTERPRET=1 with bf16: the interpreter multiplies bf16 bit
patterns in tl.dot (triton-lang/triton#11584, "not supported"). Upcasting the already-bf16 operands
(p is still rounded to bf16 first) gives exactly the products a bf16 tensor-core dot accumulates in fp32.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from rocmforge.cache.kv_cache import FP8_DTYPES
from rocmforge.kernels.arch import current_arch
from rocmforge.kernels.flash_attn_configs import AttnConfig, aot_specs, pick_config  # noqa: F401 (re-exported)

LOG2E = 1.4426950408889634


@triton.jit
def _load_tile(ptrs, kv_ok, q, MASKED: tl.constexpr, KV_FP8: tl.constexpr):
    """A (BLOCK_N, d) K or V tile; rows past k_len read as 0 when MASKED; an fp8 cache in q's dtype."""
    if MASKED:
        t = tl.load(ptrs, mask=kv_ok[:, None], other=0.0)
    else:
        t = tl.load(ptrs)
    if KV_FP8:  # an fp8 cache: decoded to the query's dtype right after the load
        t = t.to(q.dtype)
    return t


@triton.jit
def _attn_tiles(acc, acc2, l_i, m_i, q, q_ptrs, row_ok, K, V, BT, lo, hi, k_start, k_len, pos_m, k_head,
                v_head, stride_kt, stride_kb, stride_vt, stride_vb, window, qk_scale,
                BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
                PAGED: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, USE_WINDOW: tl.constexpr,
                DOT_F32: tl.constexpr, KV_FP8: tl.constexpr, SPLIT_D: tl.constexpr):
    # SPLIT_D: the head dim in two halves, acc (lo) and acc2 (hi): s = q_lo.k_lo + q_hi.k_hi with each q
    # half re-read from q_ptrs per tile, acc / acc2 += p v_lo / p v_hi; only half a tile is live at a time
    if SPLIT_D:
        offs_d = tl.arange(0, HEAD_DIM // 2)
    else:
        offs_d = tl.arange(0, HEAD_DIM)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        kv_ok = offs_n < k_len
        if PAGED:
            if MASKED:
                blk = tl.load(BT + offs_n // PAGE_SIZE, mask=kv_ok, other=0).to(tl.int64)
            else:
                blk = tl.load(BT + offs_n // PAGE_SIZE).to(tl.int64)
            slot = (offs_n % PAGE_SIZE).to(tl.int64)
            k_rows = blk * stride_kb + slot * stride_kt
            v_rows = blk * stride_vb + slot * stride_vt
        else:
            rows = (k_start + offs_n).to(tl.int64)
            k_rows = rows * stride_kt
            v_rows = rows * stride_vt
        k_ptrs = tl.multiple_of(K + k_head + k_rows[:, None] + offs_d[None, :], [16, 16])  # (BLOCK_N, D)
        v_ptrs = tl.multiple_of(V + v_head + v_rows[:, None] + offs_d[None, :], [16, 16])
        if SPLIT_D:  # NOTE: q is re-read per tile (cache hits): WMMA operand layouts of a held q spill
            qa = tl.load(q_ptrs, mask=row_ok, other=0.0)
        else:
            qa = q
        if DOT_F32:
            qa = qa.to(tl.float32)
        k = _load_tile(k_ptrs, kv_ok, qa, MASKED, KV_FP8)
        if DOT_F32:
            k = k.to(tl.float32)
        qk = tl.dot(qa, tl.trans(k))  # (BLOCK_M, BLOCK_N) fp32
        if SPLIT_D:
            qa = tl.load(q_ptrs + HEAD_DIM // 2, mask=row_ok, other=0.0)
            if DOT_F32:
                qa = qa.to(tl.float32)
            k = _load_tile(k_ptrs + HEAD_DIM // 2, kv_ok, qa, MASKED, KV_FP8)
            if DOT_F32:
                k = k.to(tl.float32)
            qk = tl.dot(qa, tl.trans(k), qk)
        if MASKED:
            ok = kv_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= pos_m[:, None])
            if USE_WINDOW:
                ok = ok & (offs_n[None, :] > pos_m[:, None] - window)
            qk = tl.where(ok, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.exp2(qk - m_new[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_ptrs, kv_ok, q, MASKED, KV_FP8)
        p = p.to(v.dtype)  # (BLOCK_M, BLOCK_N) probabilities rounded to the input dtype
        if DOT_F32:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = tl.dot(p, v, acc * alpha[:, None])
        if SPLIT_D:
            v = _load_tile(v_ptrs + HEAD_DIM // 2, kv_ok, q, MASKED, KV_FP8)
            if DOT_F32:
                v = v.to(tl.float32)
            acc2 = tl.dot(p, v, acc2 * alpha[:, None])
        m_i = m_new
    return acc, acc2, l_i, m_i


@triton.jit
def _flash_attn_fwd(Q, K, V, Out, CuQ, CuK, SeqLens, BT,
                    stride_qt, stride_qh, stride_kt, stride_kh, stride_kb, stride_vt, stride_vh, stride_vb,
                    stride_ot, stride_oh, stride_bts, group, window, qk_scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                    PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr, CAUSAL: tl.constexpr,
                    USE_WINDOW: tl.constexpr, DOT_F32: tl.constexpr, KV_FP8: tl.constexpr,
                    SPLIT_D: tl.constexpr):
    # NOTE: the last query blocks of a causal sequence see the most keys: launch them first.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    q_start = tl.load(CuQ + s)
    q_len = tl.load(CuQ + s + 1) - q_start
    m0 = pid_m * BLOCK_M
    if m0 >= q_len:
        return
    if PAGED:
        k_start = 0
        k_len = tl.load(SeqLens + s)
        BT += s.to(tl.int64) * stride_bts
    else:
        k_start = tl.load(CuK + s)
        k_len = tl.load(CuK + s + 1) - k_start
    offs_m = m0 + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query index within the sequence
    D_PART: tl.constexpr = HEAD_DIM // 2 if SPLIT_D else HEAD_DIM  # columns per half (SPLIT_D) or all
    offs_d = tl.arange(0, D_PART)
    pos_m = k_len - q_len + offs_m  # (BLOCK_M,) query positions
    q_rows = (q_start + offs_m).to(tl.int64)
    row_ok = (offs_m < q_len)[:, None]
    # NOTE: multiple_of: rows start 16-aligned (the launcher checks), so loads/stores are 16-byte wide even
    # when compiled ahead of time without the JIT's argument specialization.
    q_ptrs = tl.multiple_of(Q + q_rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :], [16, 16])
    q = tl.load(q_ptrs, mask=row_ok, other=0.0)  # (BLOCK_M, D_PART); SPLIT_D re-reads it per tile
    if DOT_F32:
        q = q.to(tl.float32)

    # Key tiles: [lo, ul) masked | [ul, uh) unmasked | [uh, n_end) masked; all offsets multiples of BLOCK_N.
    p_lo = k_len - q_len + m0  # first query position of the block
    p_hi = k_len - q_len + tl.minimum(m0 + BLOCK_M, q_len) - 1  # last valid one
    hi = k_len
    full_hi = k_len
    lo = 0
    full_lo = 0
    if CAUSAL:
        hi = tl.minimum(k_len, p_hi + 1)
        full_hi = tl.minimum(k_len, p_lo + 1)
    if USE_WINDOW:
        lo = tl.maximum(p_lo - window + 1, 0)
        full_lo = tl.maximum(p_hi - window + 1, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    n_end = lo + tl.cdiv(hi - lo, BLOCK_N) * BLOCK_N
    ul = tl.minimum(tl.maximum(tl.cdiv(full_lo, BLOCK_N) * BLOCK_N, lo), n_end)
    uh = tl.maximum(tl.minimum((full_hi // BLOCK_N) * BLOCK_N, n_end), ul)

    acc = tl.zeros([BLOCK_M, D_PART], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_M, D_PART], dtype=tl.float32)  # NOTE: stays unused (dead) without SPLIT_D
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    k_head = (h // group) * stride_kh
    v_head = (h // group) * stride_vh
    acc, acc2, l_i, m_i = _attn_tiles(
        acc, acc2, l_i, m_i, q, q_ptrs, row_ok, K, V, BT, ul, uh, k_start, k_len, pos_m, k_head, v_head,
        stride_kt, stride_kb, stride_vt, stride_vb, window, qk_scale,
        BLOCK_N, HEAD_DIM, PAGE_SIZE, PAGED, False, CAUSAL, USE_WINDOW, DOT_F32, KV_FP8, SPLIT_D)
    acc, acc2, l_i, m_i = _attn_tiles(
        acc, acc2, l_i, m_i, q, q_ptrs, row_ok, K, V, BT, lo, ul, k_start, k_len, pos_m, k_head, v_head,
        stride_kt, stride_kb, stride_vt, stride_vb, window, qk_scale,
        BLOCK_N, HEAD_DIM, PAGE_SIZE, PAGED, True, CAUSAL, USE_WINDOW, DOT_F32, KV_FP8, SPLIT_D)
    acc, acc2, l_i, m_i = _attn_tiles(
        acc, acc2, l_i, m_i, q, q_ptrs, row_ok, K, V, BT, uh, n_end, k_start, k_len, pos_m, k_head, v_head,
        stride_kt, stride_kb, stride_vt, stride_vb, window, qk_scale,
        BLOCK_N, HEAD_DIM, PAGE_SIZE, PAGED, True, CAUSAL, USE_WINDOW, DOT_F32, KV_FP8, SPLIT_D)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_ptrs = tl.multiple_of(Out + q_rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], [16, 16])
    tl.store(o_ptrs, (acc / l_safe).to(Out.dtype.element_ty), mask=row_ok)
    if SPLIT_D:
        tl.store(o_ptrs + HEAD_DIM // 2, (acc2 / l_safe).to(Out.dtype.element_ty), mask=row_ok)


# ---------------------------------------------------------------- launchers

_DTYPES = (torch.float16, torch.bfloat16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check(q, k, v, out, *, kv_dims: int):
    if q.dim() != 3 or k.dim() != kv_dims or v.shape != k.shape:
        raise ValueError(f"expected q (T, Hq, D) and k, v of equal {kv_dims}-d shape; got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    kv_ok = k.dtype == v.dtype and (k.dtype == q.dtype or k.dtype in FP8_DTYPES)
    if q.dtype not in _DTYPES or not kv_ok:
        raise ValueError(f"flash attention takes fp16 or bf16 q with k/v of q's dtype or fp8 (e4m3); got "
                         f"{q.dtype}, {k.dtype}, {v.dtype} (use ref_attention_* for float32)")
    d, hq, hkv = q.shape[2], q.shape[1], k.shape[-2]
    if k.shape[-1] != d or d < 16 or d > 256 or d & (d - 1):
        raise ValueError(f"head_dim must be a power of two in [16, 256] and equal for q and k; "
                         f"got {d}, {k.shape[-1]}")
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dim (stride 1), got strides {t.stride()}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
        if t.data_ptr() % 32 or any(st % 16 for st in t.stride()[:-1]):
            raise ValueError(f"{name} needs a 32-byte aligned start and strides that are multiples of 16 "
                             f"elements (got strides {t.stride()}); pass a contiguous tensor")
    if out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must match q: {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if q.device.type == "cpu" and not _interpreting():
        raise ValueError("flash attention needs GPU tensors (or TRITON_INTERPRET=1); on CPU call "
                         "rocmforge.kernels.reference_attention instead")


def _check_index(name: str, t: torch.Tensor, length: int | None, device) -> None:
    if t.dtype != torch.int32 or t.dim() != 1 or not t.is_contiguous() or t.device != device:
        raise ValueError(f"{name} must be a contiguous 1-d int32 tensor on {device}; got {t.dtype} "
                         f"{tuple(t.shape)} on {t.device}")
    if length is not None and t.numel() != length:
        raise ValueError(f"{name} must have {length} entries, got {t.numel()}")


def _launch(q, k, v, out, cu_q, cu_k, seq_lens, bt, *, max_seqlen_q, scale, causal, sliding_window, paged,
            config):
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be >= 1 or None, got {sliding_window}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    num_seqs = cu_q.numel() - 1
    if q.shape[0] == 0 or num_seqs == 0 or max_seqlen_q <= 0:
        return out
    cfg = config or pick_config(current_arch(q.device) if q.is_cuda else current_arch(), q.shape[2])
    kv_row = 1 if paged else 0  # paged caches are (blocks, block_size, Hkv, D)
    grid = (triton.cdiv(max_seqlen_q, cfg.block_m), q.shape[1], num_seqs)
    _flash_attn_fwd[grid](
        q, k, v, out, cu_q, cu_k, seq_lens, bt,
        q.stride(0), q.stride(1), k.stride(kv_row), k.stride(kv_row + 1), k.stride(0),
        v.stride(kv_row), v.stride(kv_row + 1), v.stride(0), out.stride(0), out.stride(1), bt.stride(0),
        q.shape[1] // k.shape[-2], sliding_window or 0, scale * LOG2E,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=q.shape[2], PAGE_SIZE=k.shape[1] if paged else 1,
        PAGED=paged, CAUSAL=causal, USE_WINDOW=sliding_window is not None,
        DOT_F32=_interpreting() and q.dtype == torch.bfloat16, KV_FP8=k.dtype in FP8_DTYPES,
        SPLIT_D=cfg.split_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


def flash_attn_varlen(
    q: torch.Tensor,  # (Tq, Hq, D) fp16/bf16, sequences end to end
    k: torch.Tensor,  # (Tk, Hkv, D)
    v: torch.Tensor,  # (Tk, Hkv, D)
    *,
    cu_seqlens_q: torch.Tensor,  # (S+1,) int32
    cu_seqlens_k: torch.Tensor,  # (S+1,) int32; each sequence needs k_len >= q_len
    max_seqlen_q: int,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,  # (Tq, Hq, D) written in place when given
    config: AttnConfig | None = None,  # tile override (tuning); default pick_config(arch, D)
) -> torch.Tensor:  # (Tq, Hq, D)
    """Attention of each sequence's queries over its contiguous keys (bottom-right causal alignment)."""
    out = torch.empty_like(q) if out is None else out
    _check(q, k, v, out, kv_dims=3)
    _check_index("cu_seqlens_q", cu_seqlens_q, None, q.device)
    _check_index("cu_seqlens_k", cu_seqlens_k, cu_seqlens_q.numel(), q.device)
    return _launch(q, k, v, out, cu_seqlens_q, cu_seqlens_k, cu_seqlens_k, cu_seqlens_k.view(1, -1),
                   max_seqlen_q=max_seqlen_q, scale=scale, causal=causal, sliding_window=sliding_window,
                   paged=False, config=config)


def flash_attn_paged(
    q: torch.Tensor,  # (Tq, Hq, D)
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    *,
    cu_seqlens_q: torch.Tensor,  # (S+1,) int32
    seq_lens: torch.Tensor,  # (S,) int32 total keys per sequence; its queries are the last q_len
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    max_seqlen_q: int,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
    config: AttnConfig | None = None,
) -> torch.Tensor:  # (Tq, Hq, D)
    """Same as `flash_attn_varlen`, with K/V gathered from the paged cache through the block table."""
    out = torch.empty_like(q) if out is None else out
    _check(q, k_cache, v_cache, out, kv_dims=4)
    num_seqs = cu_seqlens_q.numel() - 1
    _check_index("cu_seqlens_q", cu_seqlens_q, None, q.device)
    _check_index("seq_lens", seq_lens, num_seqs, q.device)
    bt = block_tables
    if bt.dtype != torch.int32 or bt.dim() != 2 or bt.shape[0] != num_seqs or bt.stride(1) != 1 \
            or bt.device != q.device:
        raise ValueError(f"block_tables must be (S={num_seqs}, max_blocks) int32 with contiguous rows; got "
                         f"{bt.dtype} {tuple(bt.shape)} strides {bt.stride()} on {bt.device}")
    return _launch(q, k_cache, v_cache, out, cu_seqlens_q, seq_lens, seq_lens, bt,
                   max_seqlen_q=max_seqlen_q, scale=scale, causal=causal, sliding_window=sliding_window,
                   paged=True, config=config)
