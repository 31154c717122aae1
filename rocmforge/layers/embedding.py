"""Token embedding lookup, optionally scaled (Gemma multiplies by sqrt(hidden_size))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, *, scale: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim), requires_grad=False)  # (vocab, dim)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (T,) int64 -> (T, dim)
        x = F.embedding(ids, self.weight)
        return x * self.scale if self.scale is not None else x


class Vector(nn.Module):
    """A lone 1-D tensor in the file (e.g. `rope_freqs.weight`), held so the strict load sees its name."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n), requires_grad=False)  # (n,)
