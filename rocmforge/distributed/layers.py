"""The modules that communicate: row-parallel linear, vocab-parallel embedding, the gathering LM.

    RowParallel:        y = all_reduce(x_r W_r^T)               x_r, W_r: this rank's input-feature slice
    VocabEmbedding:     e = all_reduce(mask_r(ids) * E_r[ids - v0]) (exactly one rank holds each id)
    TPCausalLM:         logits = concat_r(h W_vocab,r^T)        the CausalLM's head on its vocab slice

Column-parallel layers need no module of their own: a Linear holding its output rows already is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.base import AttentionMetadata
from ..layers.embedding import Embedding
from .parallel_state import TPGroup


class RowParallel(nn.Module):
    """Wraps a Linear / QuantLinear holding in-feature columns [c0, c1): its partial products summed.
    A bias must be added once: only rank 0's inner layer may carry one (tp.py zeroes the others')."""

    def __init__(self, inner: nn.Module, group: TPGroup):
        super().__init__()
        self.inner, self.group = inner, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in / W) -> (T, out)
        return self.group.all_reduce(self.inner(x))


class VocabParallelEmbedding(Embedding):
    """weight (v1 - v0, dim): rows [v0, v1) of the embedding; ids outside them read zeros here."""

    def __init__(self, weight: torch.Tensor, v0: int, *, scale: float | None, group: TPGroup):
        super().__init__(0, 0, scale=scale)
        self.weight = nn.Parameter(weight, requires_grad=False)  # (v1 - v0, dim)
        self.v0, self.group = v0, group

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (T,) int64 -> (T, dim)
        local = ids - self.v0
        outside = (local < 0) | (local >= self.weight.shape[0])  # (T,)
        x = F.embedding(local.clamp(0, self.weight.shape[0] - 1), self.weight)  # (T, dim)
        x = x.masked_fill(outside[:, None], 0.0)
        if self.scale is not None:
            x = x * self.scale
        return self.group.all_reduce(x)  # x + exact zeros: the same bits as the unsplit lookup

    def extra_repr(self) -> str:
        return f"rows=[{self.v0}, {self.v0 + self.weight.shape[0]}), dim={self.weight.shape[1]}"


class TPCausalLM(nn.Module):
    """This rank's sharded CausalLM; forward returns the full-vocabulary logits on every rank."""

    def __init__(self, lm: nn.Module, group: TPGroup, vocab_sizes: tuple[int, ...]):
        super().__init__()
        self.lm, self.group, self.vocab_sizes = lm, group, vocab_sizes
        self.config = lm.config  # the full model's config

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:  # fmt: skip
        local = self.lm(input_ids, positions, meta)  # (N, V_r) float32: logits of this rank's slice
        return self.group.gather_last(local, self.vocab_sizes)  # (N, V)


__all__ = ["RowParallel", "TPCausalLM", "VocabParallelEmbedding"]
