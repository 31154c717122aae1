"""Rotary position embedding, applied in place to q and k.

For token t at position p, each pair (x1, x2) of the first rot_dim dims of every head is rotated by
the angle p * f_i (f_i = base^(-2i / rot_dim), rescaled by the model's scaling rule):

    x1' = x1 cos(p f_i) - x2 sin(p f_i),      x2' = x2 cos(p f_i) + x1 sin(p f_i),   i < rot_dim / 2

NeoX layout (llama.cpp LLAMA_ROPE_TYPE_NEOX: qwen2, gemma3; HF's rotate_half) pairs dim i with dim
i + rot_dim/2; the normal layout (llama in GGUF, GPT-J style) pairs dims 2i and 2i + 1. Dims past
rot_dim are left alone (partial rotary). The angle table `cos_sin_cache` (max_pos, rot_dim) fp32 holds
[cos | sin] per position and is built once on the host by `rope_cos_sin_cache` (frequency maths in
float64: linear, llama3 and YaRN scaling; a per-layer base is just another table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch


@dataclass(frozen=True)
class RopeScaling:
    """How to stretch the frequencies for a longer context (GGUF `rope.scaling.*`, HF `rope_scaling`)."""

    kind: str  # "linear" | "llama3" | "yarn"
    factor: float  # context stretch s
    original_max_position: int = 0  # llama3 / yarn: the pre-training context length
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn: rotations above which a dim is left as is
    beta_slow: float = 1.0  # yarn: rotations below which a dim is fully interpolated
    attn_factor: float | None = None  # yarn: cos/sin multiplier; None = 0.1 ln(s) + 1

    def __post_init__(self):
        if self.kind not in ("linear", "llama3", "yarn"):
            raise ValueError(f"unknown rope scaling {self.kind!r}: expected linear, llama3 or yarn")
        if self.factor <= 0:
            raise ValueError(f"rope scaling factor must be positive, got {self.factor}")
        if self.kind in ("llama3", "yarn") and self.original_max_position <= 0:
            raise ValueError(f"{self.kind} rope scaling needs original_max_position")


def rope_inv_freq(rot_dim: int, base: float, scaling: RopeScaling | None = None,
                  ) -> tuple[torch.Tensor, float]:
    """(rot_dim/2,) float64 frequencies f_i and the cos/sin multiplier (1 except YaRN).

    linear: f_i / s.  llama3: wavelength w_i = 2 pi / f_i; keep f_i when w_i < L0 / high_freq_factor,
    use f_i / s when w_i > L0 / low_freq_factor, else blend (1 - a) f_i / s + a f_i with
    a = (L0 / w_i - low) / (high - low).  YaRN: dim i makes r_i = L0 f_i / (2 pi) turns over the
    original context L0; the dim index where r = b is d(b) = rot_dim ln(L0 / (2 pi b)) / (2 ln base);
    ramp(i) = clamp((i - floor d(beta_fast)) / (ceil d(beta_slow) - floor d(beta_fast)), 0, 1) and
    f_i' = (1 - ramp) f_i + ramp f_i / s; cos and sin are multiplied by 0.1 ln(s) + 1.
    """
    f = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    if scaling is None:
        return f, 1.0
    s, L0 = scaling.factor, scaling.original_max_position
    if scaling.kind == "linear":
        return f / s, 1.0
    if scaling.kind == "llama3":
        wavelen = 2 * math.pi / f
        a = (L0 / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        blended = (1 - a) * f / s + a * f
        out = torch.where(wavelen > L0 / scaling.low_freq_factor, f / s, blended)
        return torch.where(wavelen < L0 / scaling.high_freq_factor, f, out), 1.0

    def dim_of(turns: float) -> float:
        return rot_dim * math.log(L0 / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(dim_of(scaling.beta_fast)), 0)
    high = min(math.ceil(dim_of(scaling.beta_slow)), rot_dim - 1)
    i = torch.arange(rot_dim // 2, dtype=torch.float64)
    ramp = ((i - low) / max(high - low, 1e-3)).clamp(0, 1)
    mscale = scaling.attn_factor if scaling.attn_factor is not None else (
        0.1 * math.log(s) + 1.0 if s > 1 else 1.0)
    return (1 - ramp) * f + ramp * f / s, mscale


def rope_cos_sin_cache(rot_dim: int, max_pos: int, base: float, scaling: RopeScaling | None = None,
                       device=None) -> torch.Tensor:  # (max_pos, rot_dim) fp32: [cos | sin]
    """The angle table the kernel reads, computed in float64 and rounded once to fp32."""
    f, mscale = rope_inv_freq(rot_dim, base, scaling)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * f[None, :]  # (max_pos, rot_dim/2)
    return (torch.cat([ang.cos(), ang.sin()], dim=-1) * mscale).float().to(device)


@triton.jit
def _rotate_heads(x_ptr, stride_h, cos, sin, offs_i, mask_i,
                  NUM_HEADS: tl.constexpr, BLOCK_H: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
                  NEOX: tl.constexpr):
    for h0 in tl.static_range(0, NUM_HEADS, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mask_h = (offs_h < NUM_HEADS)[:, None]
        if NEOX:
            mask = mask_h & mask_i[None, :]
            p1 = x_ptr + offs_h[:, None] * stride_h + offs_i[None, :]  # (BLOCK_H, HALF_PAD)
            x1 = tl.load(p1, mask=mask).to(tl.float32)
            x2 = tl.load(p1 + HALF, mask=mask).to(tl.float32)
            tl.store(p1, (x1 * cos - x2 * sin).to(x_ptr.dtype.element_ty), mask=mask)
            tl.store(p1 + HALF, (x2 * cos + x1 * sin).to(x_ptr.dtype.element_ty), mask=mask)
        else:
            # NOTE: pairs (2i, 2i+1) are loaded as one contiguous row and split in registers; two
            # stride-2 accesses instead ran at ~6% of HBM bandwidth on an H200 (partial-sector writes).
            offs_r = tl.arange(0, 2 * HALF_PAD)
            mask = mask_h & (offs_r < 2 * HALF)[None, :]
            p = x_ptr + offs_h[:, None] * stride_h + offs_r[None, :]  # (BLOCK_H, 2 HALF_PAD)
            x = tl.load(p, mask=mask).to(tl.float32)
            x1, x2 = tl.split(tl.reshape(x, (BLOCK_H, HALF_PAD, 2)))
            y = tl.join(x1 * cos - x2 * sin, x2 * cos + x1 * sin)  # (BLOCK_H, HALF_PAD, 2)
            tl.store(p, tl.reshape(y, (BLOCK_H, 2 * HALF_PAD)).to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, pos_ptr, cs_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cs,
    HQ: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr, NEOX: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t)
    offs_i = tl.arange(0, HALF_PAD)
    mask_i = offs_i < HALF
    cos = tl.load(cs_ptr + pos * stride_cs + offs_i, mask=mask_i, other=1.0)[None, :]  # (1, HALF_PAD)
    sin = tl.load(cs_ptr + pos * stride_cs + HALF + offs_i, mask=mask_i, other=0.0)[None, :]
    _rotate_heads(q_ptr + t * stride_qt, stride_qh, cos, sin, offs_i, mask_i,
                  HQ, BLOCK_H, HALF, HALF_PAD, NEOX)
    _rotate_heads(k_ptr + t * stride_kt, stride_kh, cos, sin, offs_i, mask_i,
                  HKV, BLOCK_H, HALF, HALF_PAD, NEOX)


def rope_config(arch: Arch, half: int) -> dict:
    """Head blocks of ~2048 (x1, x2) elements each; warps sized to the block."""
    half_pad = triton.next_power_of_2(half)
    return dict(BLOCK_H=max(1, 2048 // half_pad), num_warps=4)


def apply_rope(
    q: torch.Tensor,  # (T, Hq, D), rotated in place
    k: torch.Tensor,  # (T, Hkv, D), rotated in place
    positions: torch.Tensor,  # (T,) int64
    cos_sin_cache: torch.Tensor,  # (max_pos, rot_dim) fp32: [cos | sin]
    *,
    neox: bool,
    rot_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates q and k in place (see the module docstring) and returns them."""
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    rot_dim = rot_dim or cos_sin_cache.shape[1]
    assert k.shape == (T, Hkv, D) and k.dtype == q.dtype, f"q {tuple(q.shape)} vs k {tuple(k.shape)}"
    assert positions.dtype == torch.int64 and positions.shape == (T,), "positions must be (T,) int64"
    assert cos_sin_cache.dtype == torch.float32 and cos_sin_cache.shape[1] == rot_dim, "bad cos_sin_cache"
    assert rot_dim % 2 == 0 and rot_dim <= D, f"rot_dim {rot_dim} must be even and <= head_dim {D}"
    assert q.stride(2) == 1 and k.stride(2) == 1 and cos_sin_cache.stride(1) == 1
    if T == 0:
        return q, k
    cfg = rope_config(current_arch(q.device), rot_dim // 2)
    _rope_kernel[(T,)](
        q, k, positions, cos_sin_cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos_sin_cache.stride(0),
        HQ=Hq, HKV=Hkv, HALF=rot_dim // 2, HALF_PAD=triton.next_power_of_2(rot_dim // 2),
        BLOCK_H=cfg["BLOCK_H"], NEOX=neox, num_warps=cfg["num_warps"],
    )
    return q, k


def aot_specs(arch: Arch) -> list[dict]:
    """bf16/fp16; (Hq, Hkv, rot_dim) for the shipped models' shapes; both layouts."""
    specs = []
    for dt in ("bf16", "fp16"):
        for hq, hkv, rd in ((9, 3, 64), (14, 2, 64), (32, 8, 128), (8, 4, 256)):
            for neox in (True, False):
                cfg = rope_config(arch, rd // 2)
                sig = {"q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "pos_ptr": "*i64", "cs_ptr": "*fp32"}
                ints = ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_cs")
                sig.update({n: "i32" for n in ints})
                const = dict(HQ=hq, HKV=hkv, HALF=rd // 2, HALF_PAD=triton.next_power_of_2(rd // 2),
                             BLOCK_H=cfg["BLOCK_H"], NEOX=neox)
                sig.update({n: "constexpr" for n in const})
                name = f"rope_{dt}_{hq}x{hkv}_r{rd}_{'neox' if neox else 'norm'}"
                specs.append(dict(name=name, fn=_rope_kernel,
                                  signature=sig, constexprs=const, num_warps=cfg["num_warps"], num_stages=1))
    return specs
