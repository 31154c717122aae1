"""Rotary position embedding (RoPE) on the leading `rope_dim` dims of each head.

Pair i (0 <= i < d/2, d = rope_dim) of a head at position p is rotated by the angle p * theta_i,

    theta_i = base^(-2i / d)                          (plain)
    theta_i = base^(-2i / d) / factor                 (linear scaling)
    theta_i = base^(-2i / d) / f_i                    (llama3: f_i from the `rope_freqs.weight` tensor)
    theta_i = (1 - r_i) theta_i / factor + r_i theta_i   (yarn, r_i a ramp over the beta band;
                                                         cos and sin are multiplied by attn_factor)

    (x_a, x_b) -> (x_a cos - x_b sin,  x_a sin + x_b cos)

where the pair is (x[2i], x[2i+1]) in the normal layout and (x[i], x[i + d/2]) in the NeoX layout.
Dims past rope_dim pass through unchanged.

`prepare(positions, factors, max_pos)` + `rotate(q, k, prepared)` is what the model calls: on a GPU
the Triton kernel (kernels/rope.py) rotates q and k in place from an angle table [cos | sin]
(max_pos, d) computed once in float64 (grown on demand, from host sizes only); elsewhere
`cos_sin` + `forward` below, the torch twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import RopeScaling
from .dispatch import triton_layers


@dataclass
class RopeTable:
    """The GPU form of prepared RoPE angles: the kernel's positions and its [cos | sin] table."""

    positions: torch.Tensor  # (T,) int64
    table: torch.Tensor  # (max_pos, rope_dim) fp32


def rope_inv_freq(dim: int, base: float, scaling: RopeScaling | None = None) -> torch.Tensor:  # (dim/2,)
    """theta_i in float64 (before llama3 factors), as in the module docstring."""
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim)  # (dim/2,)
    if scaling is None:
        return inv
    if scaling.type == "linear":
        return inv / scaling.factor
    if scaling.type == "yarn":
        # Pair i turns orig_ctx * theta_i / (2 pi) times over the original context; pairs turning more
        # than beta_fast times keep theta_i (r = 1), fewer than beta_slow are interpolated (r = 0).
        def corr_dim(rotations: float) -> float:  # the i at which pair i turns `rotations` times
            return dim * math.log(scaling.original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr_dim(scaling.beta_fast)), 0)
        high = min(math.ceil(corr_dim(scaling.beta_slow)), dim - 1)
        ramp = (torch.arange(dim // 2, dtype=torch.float64, device="cpu") - low) / max(high - low, 1e-3)
        r = 1.0 - ramp.clamp(0.0, 1.0)  # 1 = keep theta_i, 0 = interpolate
        return inv / scaling.factor * (1 - r) + inv * r
    raise ValueError(f"unknown rope scaling type {scaling.type!r}")


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float, *, neox: bool, scaling: RopeScaling | None = None,
                 device: torch.device | str | None = None):  # fmt: skip
        super().__init__()
        self.dim, self.neox = dim, neox
        self.mscale = scaling.attn_factor if scaling is not None and scaling.type == "yarn" else 1.0
        inv64 = rope_inv_freq(dim, base, scaling)
        inv = inv64.to(device=device, dtype=torch.float32)
        self.register_buffer("inv_freq", inv, persistent=False)  # (dim/2,)
        self._inv64 = inv64  # NOTE: a plain CPU attribute: model.to(dtype) must not round it
        self._table: torch.Tensor | None = None  # GPU angle table, (rows, dim) fp32

    def cos_sin(self, positions: torch.Tensor, freq_factors: torch.Tensor | None = None):
        """positions (T,) int64 -> cos, sin each (T, 1, dim/2) float32, broadcast over heads."""
        inv = self.inv_freq if freq_factors is None else self.inv_freq / freq_factors.float()
        angles = positions.float()[:, None] * inv[None, :]  # (T, dim/2)
        cos, sin = angles.cos(), angles.sin()
        if self.mscale != 1.0:
            cos, sin = cos * self.mscale, sin * self.mscale
        return cos[:, None, :], sin[:, None, :]

    def prepare(self, positions: torch.Tensor, freq_factors: torch.Tensor | None, max_pos: int):
        """What `rotate` needs for these positions (all < max_pos): (cos, sin), or a RopeTable on a GPU."""
        if not triton_layers(positions):
            return self.cos_sin(positions, freq_factors)
        t = self._table
        if t is None or t.shape[0] < max_pos or t.device != positions.device:
            rows = max(max_pos, 4096 if t is None else 2 * t.shape[0])
            inv = self._inv64 if freq_factors is None else self._inv64 / freq_factors.double().cpu()
            ang = torch.arange(rows, dtype=torch.float64)[:, None] * inv[None, :]  # (rows, dim/2)
            t = (torch.cat((ang.cos(), ang.sin()), dim=-1) * self.mscale).float().to(positions.device)
            self._table = t
        return RopeTable(positions, t)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, prepared):  # (T, Hq, D), (T, Hkv, D)
        """-> rotated (q, k): in place by the kernel on a GPU, new tensors on the torch path."""
        if isinstance(prepared, RopeTable):
            from ..kernels.rope import apply_rope  # imports Triton: GPU installs only

            return apply_rope(q, k, prepared.positions, prepared.table, neox=self.neox, rot_dim=self.dim)
        return self(q, *prepared), self(k, *prepared)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (T, H, D) -> rotated (T, H, D); cos/sin from `cos_sin` of the same positions."""
        d = self.dim
        rot = x[..., :d].float()
        if self.neox:
            a, b = rot[..., : d // 2], rot[..., d // 2 :]  # (T, H, d/2) each
            out = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        else:
            pairs = rot.unflatten(-1, (d // 2, 2))  # (T, H, d/2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
        out = out.to(x.dtype)
        return out if d == x.shape[-1] else torch.cat((out, x[..., d:]), dim=-1)
