"""The attention layer: hands q/k/v of one layer to the attention backend with the layer's cache.

It owns no weights (the projections live on the decoder block under their GGUF names); it binds
the layer's index, softmax scale, sliding window and softcap, so a block just calls `attn(q, k, v, meta)`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention.base import AttentionBackend, AttentionMetadata


class PagedAttention(nn.Module):
    def __init__(self, layer_idx: int, backend: AttentionBackend, *, scale: float,
                 sliding_window: int | None = None, softcap: float | None = None):  # fmt: skip
        super().__init__()
        self.layer_idx, self.backend = layer_idx, backend
        self.scale, self.sliding_window, self.softcap = scale, sliding_window, softcap

    def forward(
        self,
        q: torch.Tensor,  # (T, Hq, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, D)
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (T, Hq, D)
        return self.backend.forward(q, k, v, meta.kv_caches[self.layer_idx], meta, scale=self.scale,
                                    sliding_window=self.sliding_window, softcap=self.softcap)

    def extra_repr(self) -> str:
        return f"layer={self.layer_idx}, backend={self.backend.name}, window={self.sliding_window}"
