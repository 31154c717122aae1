"""The "triton" attention backend: the GPU path (and, under TRITON_INTERPRET=1, the same kernels on CPU).

Same contract as the "torch" backend (attention/base.py): per layer the new K/V rows go to their cache
slots, then each sequence's queries attend its cached keys,

    out_i = sum_j softmax_j(s_ij) v_j,   s_ij = scale * q_i . k_j   (softcap: c * tanh(s_ij / c))

over keys j <= p_i (causal) and j > p_i - W (sliding window), GQA by index. Three kernels:

    store    kernels/kv_store.py       k, v -> cache[slot_mapping]                        every call
    decode   kernels/paged_decode.py   split-K over the block table, softcap, window      max query_len == 1
    prefill  kernels/flash_attn.py     paged flash attention, cu_seqlens queries, causal   otherwise

The flash kernel has no softcap and takes fp16/bf16 only (q and cache of one dtype, head_dim a power of
two in [16, 256]); a prefill / mixed call it cannot take runs the torch backend instead, and the reason
is logged once per backend instance. Decode launch decisions read the metadata's host lists
(seq_lens_cpu), never a device value: no host sync. Per-step values (num_splits) are computed once per
`meta` and cached on it, not once per layer.
"""

from __future__ import annotations

import logging
import os

import torch

from ..cache.kv_cache import FP8_DTYPES
from ..kernels.arch import current_arch, sm_count
from ..kernels.flash_attn import flash_attn_paged
from ..kernels.kv_store import store_kv
from ..kernels.paged_decode import choose_num_splits, decode_config, paged_decode_attention
from .base import AttentionBackend, AttentionMetadata
from .torch_backend import TorchAttentionBackend

logger = logging.getLogger(__name__)

_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_STEP_CACHE = "_triton_step"  # attribute set on an AttentionMetadata: {key: per-step value}


def _step_cache(meta: AttentionMetadata) -> dict:
    """A dict living on `meta` (one forward step), shared by every layer of that step."""
    cache = meta.__dict__.get(_STEP_CACHE)
    if cache is None:
        cache = meta.__dict__[_STEP_CACHE] = {}
    return cache


def decode_num_splits(meta: AttentionMetadata, *, num_kv_heads: int, head_dim: int, group: int,
                      sliding_window: int | None, device: torch.device) -> int:  # fmt: skip
    """Split-K factor for a decode step: from the longest sequence (host list; capped by the window,
    since no query reads more keys than that), the batch, the KV heads and the SM/CU count."""
    key = ("splits", num_kv_heads, head_dim, group, sliding_window, str(device))
    cache = _step_cache(meta)
    if key not in cache:
        longest = meta.max_seq_len if sliding_window is None else min(meta.max_seq_len, sliding_window)
        block_n = decode_config(current_arch(device), head_dim, group)["BLOCK_N"]
        cache[key] = choose_num_splits(meta.num_seqs, num_kv_heads, longest, sm_count(device), block_n)
    return cache[key]


def _flash_unfit(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 softcap: float | None) -> str | None:  # fmt: skip
    """Why the flash prefill kernel cannot take this call, or None when it can."""
    d = q.shape[2]
    if softcap is not None:
        return "prefill with an attention softcap (the flash prefill kernel has none)"
    if q.dtype not in _FLASH_DTYPES or k_cache.dtype not in (q.dtype, *FP8_DTYPES):
        return (f"prefill with dtypes q {q.dtype} / cache {k_cache.dtype} (flash takes fp16/bf16 q, a cache "
                f"of q's dtype or fp8)")
    if d < 16 or d > 256 or d & (d - 1):
        return f"prefill with head_dim {d} (flash takes a power of two in [16, 256])"
    for t in (q, k_cache, v_cache):
        if t.stride(-1) != 1 or t.data_ptr() % 32 or any(s % 16 for s in t.stride()[:-1]):
            return f"prefill of a {tuple(t.shape)} tensor, strides {t.stride()} (flash needs 16-element ones)"
    return None


class TritonAttentionBackend(AttentionBackend):
    name = "triton"

    def __init__(self):
        self._torch = TorchAttentionBackend()
        self._logged: set[str] = set()  # fallback reasons already logged by this instance

    def _fallback(self, reason: str) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            logger.warning("triton attention: these calls run on the torch backend: %s", reason)

    def forward(
        self,
        q: torch.Tensor,  # (T, Hq, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, D)
        kv_cache: tuple[torch.Tensor, torch.Tensor],  # (num_blocks, block_size, Hkv, D) each
        meta: AttentionMetadata,
        *,
        scale: float,
        sliding_window: int | None = None,
        softcap: float | None = None,
    ) -> torch.Tensor:  # (T, Hq, D) in q.dtype
        k_cache, v_cache = kv_cache
        if q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            raise ValueError("the 'triton' attention backend needs GPU tensors (or TRITON_INTERPRET=1 on "
                             "CPU); use attention_backend='torch' on a CPU-only machine")
        if v.shape != k.shape or v_cache.shape != k_cache.shape:  # the kernels take D == Dv only
            self._fallback(f"value head dim {v.shape[-1]} != key head dim {k.shape[-1]} (kernels need equal)")
            return self._torch.forward(q, k, v, kv_cache, meta, scale=scale, sliding_window=sliding_window,
                                       softcap=softcap)  # fmt: skip
        if not meta.is_decode:
            reason = _flash_unfit(q, k_cache, v_cache, softcap)
            if reason is not None:  # NOTE: the torch backend stores K/V itself
                self._fallback(reason)
                return self._torch.forward(q, k, v, kv_cache, meta, scale=scale,
                                           sliding_window=sliding_window, softcap=softcap)  # fmt: skip
        store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        if meta.is_decode:  # one query per sequence: T == S, row s is sequence s's query
            _, hq, d = q.shape
            hkv = k_cache.shape[2]
            splits = decode_num_splits(meta, num_kv_heads=hkv, head_dim=d, group=hq // hkv,
                                       sliding_window=sliding_window, device=q.device)  # fmt: skip
            return paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale=scale,
                                          sliding_window=sliding_window, softcap=softcap,
                                          num_splits=splits)  # fmt: skip
        return flash_attn_paged(q, k_cache, v_cache, cu_seqlens_q=meta.query_start_loc,
                                seq_lens=meta.seq_lens, block_tables=meta.block_tables,
                                max_seqlen_q=meta.max_query_len, scale=scale, causal=True,
                                sliding_window=sliding_window)  # fmt: skip
