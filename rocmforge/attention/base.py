"""The attention backend contract: one flat batch, paged KV cache, same on CPU and GPU.

A forward runs over T new tokens drawn from S sequences laid end to end (`query_start_loc` is
cu_seqlens). Sequence s already has `seq_lens[s] - query_lens[s]` tokens in the cache; its new
tokens sit at positions seq_lens[s]-query_lens[s] .. seq_lens[s]-1. Each layer's cache is a pair of
tensors (num_blocks, block_size, num_kv_heads, head_dim); token position p of sequence s lives in
block block_tables[s, p // block_size] at offset p % block_size, and the new tokens' slots are
given directly by `slot_mapping` (block * block_size + offset).

Query i of sequence s at position p attends key positions j with j <= p (causal) and, with a
sliding window W, j > p - W (llama.cpp's and HF's convention: W keys including itself).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    query_start_loc: torch.Tensor  # (S+1,) int32 cu_seqlens of the new tokens
    seq_lens: torch.Tensor  # (S,) int32 context length after this step (cached + new)
    slot_mapping: torch.Tensor  # (T,) int64 cache slot of each new token
    block_tables: torch.Tensor  # (S, max_blocks_per_seq) int32
    query_lens_cpu: list[int]  # host copy: new tokens per sequence
    seq_lens_cpu: list[int]  # host copy of seq_lens
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v): (num_blocks, block_size, Hkv, D)
    logits_indices: torch.Tensor | None = None  # (N,) rows of the T tokens to turn into logits; None = all

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def max_query_len(self) -> int:
        return max(self.query_lens_cpu)

    @property
    def max_seq_len(self) -> int:
        return max(self.seq_lens_cpu)

    @property
    def is_decode(self) -> bool:
        return self.max_query_len == 1


class AttentionBackend(ABC):
    """Stores the new K/V into the layer's cache, then attends each query over its sequence."""

    name: str

    @abstractmethod
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
    ) -> torch.Tensor:  # (T, Hq, D)
        ...
