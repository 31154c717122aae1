"""KV store: write the new tokens' K and V into their cache slots.

    k_cache[slot // block_size, slot % block_size] = k[t],   slot = slot_mapping[t]    (same for v)

A slot of -1 marks a padding token (a CUDA-graph batch padded to a captured size) and is skipped.
Values are cast to the cache dtype; into an fp8 (e4m3) cache they saturate at +-448 first.
One program per (token, block of heads): a pure copy, so the
kernel is bound by the bytes of k and v read and written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.cache.kv_cache import FP8_DTYPES, FP8_MAX
from rocmforge.kernels.arch import Arch, current_arch


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcb, stride_kct, stride_kch, stride_vcb, stride_vct, stride_vch,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, FP8_MAX: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    if slot >= 0:
        blk = slot // PAGE
        off = slot % PAGE
        offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_d = tl.arange(0, BLOCK_D)
        mask = (offs_h < NUM_HEADS)[:, None] & (offs_d < HEAD_DIM)[None, :]
        t64 = t.to(tl.int64)
        k = tl.load(k_ptr + t64 * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
        v = tl.load(v_ptr + t64 * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
        if FP8_MAX > 0:  # an fp8 cache saturates (e4m3 has no inf: out of range would be NaN)
            k = tl.minimum(tl.maximum(k.to(tl.float32), -FP8_MAX), FP8_MAX)
            v = tl.minimum(tl.maximum(v.to(tl.float32), -FP8_MAX), FP8_MAX)
        kc = kc_ptr + blk * stride_kcb + off * stride_kct + offs_h[:, None] * stride_kch + offs_d[None, :]
        vc = vc_ptr + blk * stride_vcb + off * stride_vct + offs_h[:, None] * stride_vch + offs_d[None, :]
        tl.store(kc, k.to(kc_ptr.dtype.element_ty), mask=mask)
        tl.store(vc, v.to(vc_ptr.dtype.element_ty), mask=mask)


def store_config(arch: Arch, num_heads: int, head_dim: int) -> dict:
    """Up to 2048 elements of K (and of V) per program: 8 KiB of bf16 in flight per tensor."""
    block_d = triton.next_power_of_2(head_dim)
    block_h = min(triton.next_power_of_2(num_heads), max(1, 2048 // block_d))
    return dict(BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4 if block_h * block_d >= 1024 else 2)


def store_kv(
    k: torch.Tensor,  # (T, Hkv, D)
    v: torch.Tensor,  # (T, Hkv, D)
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    slot_mapping: torch.Tensor,  # (T,) int64, -1 = skip
) -> None:
    """Writes k[t], v[t] into slot slot_mapping[t] of the caches (in place)."""
    T, H, D = k.shape
    assert v.shape == k.shape, f"k {tuple(k.shape)} vs v {tuple(v.shape)}"
    assert k_cache.shape == v_cache.shape and k_cache.shape[2:] == (H, D), (
        f"cache {tuple(k_cache.shape)} does not hold (T, {H}, {D}) tokens")
    assert slot_mapping.dtype == torch.int64 and slot_mapping.shape == (T,), "slot_mapping must be (T,) int64"
    assert k.stride(2) == 1 and v.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1
    if T == 0:
        return
    cfg = store_config(current_arch(k.device), H, D)
    grid = (T, triton.cdiv(H, cfg["BLOCK_H"]))
    _store_kv_kernel[grid](
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        NUM_HEADS=H, HEAD_DIM=D, PAGE=k_cache.shape[1],
        BLOCK_H=cfg["BLOCK_H"], BLOCK_D=cfg["BLOCK_D"], num_warps=cfg["num_warps"],
        FP8_MAX=FP8_MAX if k_cache.dtype in FP8_DTYPES else 0.0,
    )


def aot_specs(arch: Arch) -> list[dict]:
    """bf16/fp16 caches; Hkv in (2, 8), D in (64, 128, 256), page 16."""
    specs = []
    ints = ("stride_kt", "stride_kh", "stride_vt", "stride_vh", "stride_kcb", "stride_kct", "stride_kch",
            "stride_vcb", "stride_vct", "stride_vch")
    caches = [("bf16", "bf16"), ("fp16", "fp16")] + ([("bf16", "fp8e4nv")] if arch.is_hopper else [])
    for dt, cdt in caches:  # (new K/V dtype, cache dtype); fp8 e4m3 caches on sm90 only
        for H in (2, 8):
            for D in (64, 128, 256):
                cfg = store_config(arch, H, D)
                sig = {"k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "kc_ptr": f"*{cdt}", "vc_ptr": f"*{cdt}"}
                sig["slot_ptr"] = "*i64"
                sig.update({n: "i32" for n in ints})
                const = dict(NUM_HEADS=H, HEAD_DIM=D, PAGE=16, BLOCK_H=cfg["BLOCK_H"], BLOCK_D=cfg["BLOCK_D"],
                             FP8_MAX=FP8_MAX if cdt.startswith("fp8") else 0.0)  # fmt: skip
                sig.update({n: "constexpr" for n in const})
                tag = dt if cdt == dt else f"{dt}_to_{cdt}"
                specs.append(dict(name=f"store_kv_{tag}_h{H}_d{D}", fn=_store_kv_kernel, signature=sig,
                                  constexprs=const, num_warps=cfg["num_warps"], num_stages=1))
    return specs
