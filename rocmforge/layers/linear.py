"""Dense linear layer: y = x W^T (+ b), W stored (out_features, in_features) like the GGUF tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, *, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)  # (out, in)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out)
        return F.linear(x, self.weight, self.bias)
