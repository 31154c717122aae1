"""Build an AttentionMetadata for one flat batch from per-sequence lengths and block tables.

Sequence s has context_lens[s] tokens already in the cache and query_lens[s] new ones; its new
token at position p = context_lens[s] + i goes to cache slot

    slot = block_tables[s][p // block_size] * block_size + p % block_size
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import AttentionMetadata


def build_metadata(
    query_lens: Sequence[int],  # (S,) new tokens per sequence
    context_lens: Sequence[int],  # (S,) tokens already cached per sequence (before this step)
    block_tables: Sequence[Sequence[int]],  # per sequence, its cache block ids in position order
    block_size: int,
    kv_caches: list[tuple[torch.Tensor, torch.Tensor]],  # per layer (k, v): (num_blocks, block_size, Hkv, D)
    device: torch.device | str,
    *,
    logits: str = "last",  # "last": one row per sequence (its last new token); "all": every token
) -> AttentionMetadata:
    query_lens, context_lens = [int(x) for x in query_lens], [int(x) for x in context_lens]
    if not (len(query_lens) == len(context_lens) == len(block_tables)) or not query_lens:
        raise ValueError(f"need one query_len, context_len and block table per sequence, got "
                         f"{len(query_lens)}, {len(context_lens)}, {len(block_tables)}")
    if logits not in ("last", "all"):
        raise ValueError(f"logits must be 'last' or 'all', got {logits!r}")
    num_blocks = kv_caches[0][0].shape[0] if kv_caches else None
    seq_lens, slots, starts = [], [], [0]
    for s, (q, c, table) in enumerate(zip(query_lens, context_lens, block_tables)):
        if q < 1 or c < 0:
            raise ValueError(f"sequence {s}: query_len {q} must be >= 1 and context_len {c} >= 0")
        n = c + q
        if len(table) * block_size < n:
            raise ValueError(f"sequence {s}: {n} tokens need {-(-n // block_size)} blocks of {block_size}, "
                             f"its block table has {len(table)}")
        if num_blocks is not None and any(not 0 <= b < num_blocks for b in table):
            raise ValueError(f"sequence {s}: block table {list(table)} has ids outside the cache's "
                             f"{num_blocks} blocks")
        slots.extend(table[p // block_size] * block_size + p % block_size for p in range(c, n))
        seq_lens.append(n)
        starts.append(starts[-1] + q)
    width = max(len(t) for t in block_tables)
    tables = [list(t) + [0] * (width - len(t)) for t in block_tables]  # padded with block 0, never read
    last = [e - 1 for e in starts[1:]]
    return AttentionMetadata(
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),  # (S+1,)
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),  # (S,)
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),  # (T,)
        block_tables=torch.tensor(tables, dtype=torch.int32, device=device),  # (S, max_blocks)
        query_lens_cpu=query_lens,
        seq_lens_cpu=seq_lens,
        kv_caches=kv_caches,
        logits_indices=torch.tensor(last, dtype=torch.int64, device=device) if logits == "last" else None,
    )
