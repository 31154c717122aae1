"""Pure-torch twins of the attention kernels (prefill: varlen and paged).

For every sequence s with q_len queries and k_len keys (k_len >= q_len), query i sits at position
p = k_len - q_len + i (bottom-right causal alignment: the queries are the sequence's last tokens).
It attends key j when

    causal:          j <= p
    sliding window:  j >  p - W      (W keys including itself; the same lower bound without causal)

    out_i = sum_j softmax_j(scale * q_i . k_j) v_j       over the allowed j, in float32

With GQA, query head h reads KV head h // (Hq // Hkv). These twins are the reference the Triton
kernels are tested against and what the CPU ("torch") attention backend calls, so each sequence
goes through one `scaled_dot_product_attention` call in float32 with an explicit boolean mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_mask(q_len: int, k_len: int, *, causal: bool, sliding_window: int | None,
                   device=None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True where query i may attend key j (see the module docstring)."""
    pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # (q_len, 1) query positions
    j = torch.arange(k_len, device=device)[None, :]  # (1, k_len) key positions
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        allowed &= j <= pos
    if sliding_window is not None:
        allowed &= j > pos - sliding_window
    return allowed


def _attend_one(q, k, v, *, scale, causal, sliding_window) -> torch.Tensor:
    """q (q_len, Hq, D), k/v (k_len, Hkv, D) -> (q_len, Hq, D) float32."""
    q_len, hq, _ = q.shape
    k_len, hkv, _ = k.shape
    if k_len < q_len:
        raise ValueError(f"a sequence has {q_len} queries but only {k_len} keys; k_len must be >= q_len")
    group = hq // hkv
    qf = q.float().transpose(0, 1)  # (Hq, q_len, D)
    kf = k.float().repeat_interleave(group, dim=1).transpose(0, 1)  # (Hq, k_len, D)
    vf = v.float().repeat_interleave(group, dim=1).transpose(0, 1)  # (Hq, k_len, D)
    mask = attention_mask(q_len, k_len, causal=causal, sliding_window=sliding_window, device=q.device)
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale)  # (Hq, q_len, D)
    return out.transpose(0, 1)


def _check_common(q, k_heads: int, *, scale, sliding_window):
    if q.dim() != 3:
        raise ValueError(f"q must be (tokens, heads, head_dim), got shape {tuple(q.shape)}")
    if q.shape[1] % k_heads != 0:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k_heads})")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be >= 1 or None, got {sliding_window}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")


def ref_attention_varlen(
    q: torch.Tensor,  # (Tq, Hq, D) queries of all sequences, end to end
    k: torch.Tensor,  # (Tk, Hkv, D)
    v: torch.Tensor,  # (Tk, Hkv, D)
    *,
    cu_seqlens_q: torch.Tensor,  # (S+1,) int32 query offsets
    cu_seqlens_k: torch.Tensor,  # (S+1,) int32 key offsets
    max_seqlen_q: int,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,  # (Tq, Hq, D) written in place when given
) -> torch.Tensor:  # (Tq, Hq, D), dtype of q
    """Attention over contiguous varlen K/V; `max_seqlen_q` is accepted for signature parity only."""
    _check_common(q, k.shape[1], scale=scale, sliding_window=sliding_window)
    del max_seqlen_q
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    if len(cq) != len(ck):
        raise ValueError(f"cu_seqlens_q has {len(cq)} entries but cu_seqlens_k has {len(ck)}")
    out = torch.empty_like(q) if out is None else out
    for s in range(len(cq) - 1):
        if cq[s + 1] == cq[s]:
            continue
        o = _attend_one(q[cq[s] : cq[s + 1]], k[ck[s] : ck[s + 1]], v[ck[s] : ck[s + 1]],
                        scale=scale, causal=causal, sliding_window=sliding_window)
        out[cq[s] : cq[s + 1]] = o.to(out.dtype)
    return out


def gather_paged(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """cache (num_blocks, block_size, Hkv, D), block_table (max_blocks,) -> (length, Hkv, D)."""
    block_size = cache.shape[1]
    n_blocks = -(-length // block_size)
    blocks = block_table[:n_blocks].long()
    return cache[blocks].reshape(n_blocks * block_size, *cache.shape[2:])[:length]


def ref_attention_paged(
    q: torch.Tensor,  # (Tq, Hq, D)
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    *,
    cu_seqlens_q: torch.Tensor,  # (S+1,) int32
    seq_lens: torch.Tensor,  # (S,) int32 total keys per sequence (cached + new)
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    max_seqlen_q: int,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # (Tq, Hq, D)
    """Attention with K/V read from the paged cache; a sequence's queries are its last q_len positions."""
    _check_common(q, k_cache.shape[2], scale=scale, sliding_window=sliding_window)
    del max_seqlen_q
    cq = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    if len(lens) != len(cq) - 1:
        raise ValueError(f"seq_lens has {len(lens)} entries, cu_seqlens_q describes {len(cq) - 1} sequences")
    out = torch.empty_like(q) if out is None else out
    for s, k_len in enumerate(lens):
        if cq[s + 1] == cq[s]:
            continue
        k = gather_paged(k_cache, block_tables[s], k_len)
        v = gather_paged(v_cache, block_tables[s], k_len)
        o = _attend_one(q[cq[s] : cq[s + 1]], k, v, scale=scale, causal=causal, sliding_window=sliding_window)
        out[cq[s] : cq[s + 1]] = o.to(out.dtype)
    return out
