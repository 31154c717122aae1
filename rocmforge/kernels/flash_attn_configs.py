"""Per-target tiles of the flash-attention prefill kernel (kernels/flash_attn.py) and its AOT specs.

`pick_config(arch, head_dim)` is the tile every launch uses; `aot_specs` lists those configs as
ASTSource specs for `rocmforge kernels check` (kernels/aot.py reads it through flash_attn.aot_specs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rocmforge.kernels.arch import Arch


@dataclass(frozen=True)
class AttnConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    split_d: bool = False  # the head dim in two halves (SPLIT_D in _attn_tiles)


def _triton_version() -> tuple[int, int]:
    import triton

    return tuple(int(p) for p in triton.__version__.split(".")[:2])


def pick_config(arch: Arch, head_dim: int) -> AttnConfig:
    """Tile shape per target. NOTE: register/LDS budgets, not speed alone, bound the D=256 tiles."""
    if arch.backend == "cpu":  # interpreter: small tiles so tests cross many tile boundaries
        return AttnConfig(64, 32, 4, 1)
    if arch.is_cdna:  # 64 KB LDS, wave64: one K + one V tile of BLOCK_N x D bf16 must fit unpipelined
        return AttnConfig(128, 64, 4, 1) if head_dim <= 128 else AttnConfig(64, 32, 4, 1)
    if arch.is_rdna:  # wave32, 64 KB LDS; WMMA operand layouts are register-hungry (AOT: 239-256 VGPRs)
        if head_dim <= 64:
            return AttnConfig(64, 32, 4, 1)
        # NOTE: D=256 on Triton 3.9 held q in WMMA operand layout and spilled with every tile from 16x16
        # to 64x32; split_d (halves, q re-read per tile) at 16x16 / 8 warps compiles clean there (AOT:
        # 250-252 VGPRs). Triton 3.6 is the other way round: split_d spills 35-94 B, whole D is clean
        # (241-246 VGPRs). 3.7 / 3.8 are unchecked (they take the 3.9 choice).
        if head_dim <= 128:
            return AttnConfig(16, 16, 8, 1)
        return AttnConfig(16, 16, 8, 1, split_d=_triton_version() >= (3, 7))
    if arch.is_hopper:  # swept on H200 (benchmarks/notes_attention.md); (128, 32, 8, 3) at D=256 is +26%
        if head_dim <= 64:  # but spills 12 B in the AOT compile, so the clean 2-stage one is used
            return AttnConfig(128, 64, 4, 3)
        return AttnConfig(128, 64, 8, 3) if head_dim <= 128 else AttnConfig(128, 32, 8, 2)
    # sm80 and other CUDA parts: mma.sync keeps more in registers than wgmma; these compile spill-free.
    # NOTE: D=256 (64, 16, 4, 2) spilled 24 B on Triton 3.6 (clean on 3.9); 8 warps: 241 / 187 regs, clean.
    if head_dim <= 64:
        return AttnConfig(128, 64, 8, 3)
    return AttnConfig(128, 32, 8, 3) if head_dim <= 128 else AttnConfig(64, 16, 8, 2)



# ---------------------------------------------------------------- ahead-of-time compile specs

_TL_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16"}
_INT_ARGS = ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_kb", "stride_vt", "stride_vh",
             "stride_vb", "stride_ot", "stride_oh", "stride_bts", "group", "window")


def aot_specs(arch: Arch, *, full: bool = False) -> list[dict]:
    """The configs `_launch` would use on `arch`, as ASTSource-style specs for the AOT compile check.

    By default one bf16 spec per head dim for the two extreme variants (plain causal varlen; paged +
    sliding window, the most registers); `full=True` lists every variant and both dtypes.
    """
    from rocmforge.kernels.flash_attn import _flash_attn_fwd as kernel  # NOTE: lazy, it imports this module

    specs = []
    variants = [(False, True, False), (True, True, True)]  # (PAGED, CAUSAL, USE_WINDOW)
    if full:
        variants = [(p, c, w) for p in (False, True) for c in (False, True) for w in (False, True)]
    dtypes = (torch.bfloat16, torch.float16) if full else (torch.bfloat16,)
    for head_dim in (64, 128, 256):
        cfg = pick_config(arch, head_dim)
        for dtype in dtypes:
            ptr = "*" + _TL_DTYPE[dtype]
            for paged, causal, window in variants:
                sig = {"Q": ptr, "K": ptr, "V": ptr, "Out": ptr, "CuQ": "*i32", "CuK": "*i32",
                       "SeqLens": "*i32", "BT": "*i32"}
                for name in _INT_ARGS:
                    sig[name] = "i32"
                sig["qk_scale"] = "fp32"
                constexprs = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=head_dim,
                                  PAGE_SIZE=16 if paged else 1, PAGED=paged, CAUSAL=causal, USE_WINDOW=window,
                                  DOT_F32=False, KV_FP8=False, SPLIT_D=cfg.split_d)
                sig.update({name: "constexpr" for name in constexprs})
                tag = ("paged" if paged else "varlen") + ("_causal" if causal else "") + ("_win" * window)
                specs.append(dict(name=f"flash_attn_{tag}_d{head_dim}_{_TL_DTYPE[dtype]}", fn=kernel,
                                  signature=sig, constexprs=constexprs, num_warps=cfg.num_warps,
                                  num_stages=cfg.num_stages))
                if arch.is_hopper and paged and head_dim == 128:  # fp8 e4m3 caches (sm89+)
                    fp8 = dict(signature={**sig, "K": "*fp8e4nv", "V": "*fp8e4nv"},
                               constexprs={**constexprs, "KV_FP8": True})
                    specs.append({**specs[-1], **fp8, "name": f"flash_attn_{tag}_d128_bf16_fp8kv"})
    return specs
