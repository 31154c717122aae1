"""The "torch" attention backend: plain torch ops in float32, the CPU path and the GPU reference.

Per layer: the new K/V rows go to their cache slots (`slot_mapping`), then each sequence's queries
attend its keys (see attention/base.py for positions, causality and the window):

    out_i = sum_j softmax_j(s_ij) v_j,   s_ij = scale * q_i . k_j   (softcap: c * tanh(s_ij / c))

Keys come straight from this step's k/v when the sequence has nothing cached (prefill), otherwise
from the cache through the block table, and only from the first key any query may see (window).
GQA is done by index: the g = Hq / Hkv query heads that share KV head h are folded into h's query
rows, (Hkv, g * q_len, D), so K/V are never replicated.

A decode step (every sequence has one new token) runs all sequences in one batched attention: the
cache slots of every key each sequence may see are computed once per step (and per window) from the
block tables and kept on `meta`, so a layer is one gather of K and V plus one SDPA call over
(S, Hkv, g, L) with the padding of shorter sequences masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cache.kv_cache import FP8_DTYPES, to_cache_dtype
from .base import AttentionBackend, AttentionMetadata


def _raw(cache: torch.Tensor) -> torch.Tensor:
    """The tensor to index: an fp8 cache as its bytes (CPU torch has no fp8 index ops), else itself."""
    return cache.view(torch.uint8) if cache.dtype in FP8_DTYPES else cache


def _cooked(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Indexed rows back in the cache's dtype (bytes of an fp8 cache reinterpreted)."""
    return rows.view(dtype) if dtype in FP8_DTYPES else rows


def _gather(cache: torch.Tensor, table: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """cache (num_blocks, block_size, H, D), table (max_blocks,) -> positions [start, end) as (n, H, D)."""
    bs = cache.shape[1]
    first, last = start // bs, -(-end // bs)
    rows = _raw(cache)[table[first:last].long()].flatten(0, 1)  # ((last - first) * bs, H, D)
    return _cooked(rows[start - first * bs : end - first * bs], cache.dtype)


def _attend(q, k, v, *, first_key: int, scale: float, window: int | None, softcap: float | None):
    """q (L, Hq, D) at positions P-L..P-1, k/v (S, Hkv, D) at positions first_key..P-1 -> (L, Hq, D)."""
    L, hq, d = q.shape
    S, hkv, dv = v.shape
    g = hq // hkv
    qf = q.float().view(L, hkv, g, d).permute(1, 2, 0, 3).reshape(hkv, g * L, d)  # (Hkv, g*L, D)
    kf, vf = k.float().transpose(0, 1), v.float().transpose(0, 1)  # (Hkv, S, D)
    mask = None
    if L > 1:  # NOTE: a lone query sees every key: forward() gathers from the window's first key
        p = torch.arange(first_key + S - L, first_key + S, device=q.device)[:, None]  # (L, 1) query positions
        j = torch.arange(first_key, first_key + S, device=q.device)[None, :]  # (1, S) key positions
        allowed = j <= p
        if window is not None:
            allowed &= j > p - window
        mask = allowed.repeat(g, 1)  # (g*L, S), row gi*L + l is query l of head gi
    if softcap is None:
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale)  # (Hkv, g*L, Dv)
    else:
        s = (qf @ kf.transpose(1, 2)) * scale  # (Hkv, g*L, S)
        s = softcap * torch.tanh(s / softcap)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        out = torch.softmax(s, dim=-1) @ vf
    return out.view(hkv, g, L, dv).permute(2, 0, 1, 3).reshape(L, hq, dv)


_STEP_CACHE = "_torch_step"  # attribute set on an AttentionMetadata: {window: (slots, bias)}


def decode_keys(meta: AttentionMetadata, block_size: int, window: int | None):
    """For a decode step: the cache slot of every key each sequence attends, and the padding mask.

    Sequence s (n = seq_lens[s] tokens, its query at position n - 1) attends positions
    first_s .. n - 1, first_s = max(0, n - W) with a window W, else 0. Returns slots (S, L) int64,
    L = the longest such run (short rows repeat their last slot), and bias (S, 1, 1, L) float32 with
    -inf on those padding keys, or None when no row is padded. Computed once per (meta, window).
    """
    cache = meta.__dict__.setdefault(_STEP_CACHE, {})
    if window not in cache:
        lens = meta.seq_lens_cpu
        firsts = [0 if window is None else max(0, n - window) for n in lens]
        counts = [n - f for n, f in zip(lens, firsts)]
        L, dev = max(counts), meta.block_tables.device
        j = torch.arange(L, device=dev)  # (L,)
        last = torch.tensor(counts, device=dev)[:, None] - 1  # (S, 1)
        pos = torch.tensor(firsts, device=dev)[:, None] + torch.minimum(j[None, :], last)  # (S, L)
        blocks = meta.block_tables.long().gather(1, pos // block_size)  # (S, L)
        slots = blocks * block_size + pos % block_size  # (S, L)
        bias = None
        if min(counts) != L:
            bias = torch.zeros(len(lens), 1, 1, L, device=dev)
            bias.masked_fill_((j[None, :] > last)[:, None, None, :], float("-inf"))
        cache[window] = (slots, bias)
    return cache[window]


def _decode(q, k_cache, v_cache, meta, *, scale: float, window: int | None, softcap: float | None):
    """One query per sequence: q (S, Hq, D) -> (S, Hq, Dv), attending the keys of `decode_keys`."""
    S, hq, d = q.shape
    bs, hkv, dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[3]
    slots, bias = decode_keys(meta, bs, window)
    L = slots.shape[1]
    flat = slots.view(-1)
    k = _cooked(_raw(k_cache).view(-1, hkv, d).index_select(0, flat), k_cache.dtype)
    v = _cooked(_raw(v_cache).view(-1, hkv, dv).index_select(0, flat), v_cache.dtype)
    k = k.view(S, L, hkv, d).transpose(1, 2)  # (S, Hkv, L, D)
    v = v.view(S, L, hkv, dv).transpose(1, 2)  # (S, Hkv, L, Dv)
    qf, k, v = q.float().view(S, hkv, hq // hkv, d), k.float(), v.float()  # (S, Hkv, g, D); no-ops in fp32
    if softcap is None:
        out = F.scaled_dot_product_attention(qf, k, v, attn_mask=bias, scale=scale)  # (S, Hkv, g, Dv)
    else:
        s = torch.matmul(qf, k.transpose(-1, -2)) * scale  # (S, Hkv, g, L)
        s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias
        out = torch.matmul(torch.softmax(s, dim=-1), v)
    return out.reshape(S, hq, dv)


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def forward(
        self,
        q: torch.Tensor,  # (T, Hq, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, Dv)
        kv_cache: tuple[torch.Tensor, torch.Tensor],  # (num_blocks, block_size, Hkv, D) each
        meta: AttentionMetadata,
        *,
        scale: float,
        sliding_window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:  # (T, Hq, Dv)
        k_cache, v_cache = kv_cache
        for new, cache in ((k, k_cache), (v, v_cache)):  # (T, Hkv, D) rows into their slots
            rows = _raw(cache).view(-1, *cache.shape[2:])
            rows.index_copy_(0, meta.slot_mapping, _raw(to_cache_dtype(new, cache.dtype)))
        if meta.is_decode:  # one query per sequence: row s of q is sequence s's
            return _decode(q, k_cache, v_cache, meta, scale=scale, window=sliding_window,
                           softcap=softcap).to(q.dtype)  # fmt: skip
        out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
        start = 0
        for s, (q_len, seq_len) in enumerate(zip(meta.query_lens_cpu, meta.seq_lens_cpu)):
            end = start + q_len
            if q_len == seq_len:  # nothing cached before: this step's k/v are the whole sequence
                first, ks, vs = 0, k[start:end], v[start:end]
            else:
                first = 0 if sliding_window is None else max(0, seq_len - q_len - sliding_window + 1)
                table = meta.block_tables[s]
                ks = _gather(k_cache, table, first, seq_len)
                vs = _gather(v_cache, table, first, seq_len)
            o = _attend(q[start:end], ks, vs, first_key=first, scale=scale, window=sliding_window,
                        softcap=softcap)  # fmt: skip
            out[start:end] = o.to(out.dtype)
            start = end
        return out
