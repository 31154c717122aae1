"""Paged KV cache tensors: per layer a (k, v) pair, each (num_blocks, block_size, num_kv_heads, head_dim).

The cache holds the model's dtype ("auto") or fp8 e4m3 ("fp8", vLLM's name: half the bytes of bf16,
no scale: values saturate at +-448, the format's largest; e4m3 keeps 3 mantissa bits, so K/V carry a
relative rounding error of up to 2^-4).

Which blocks belong to which sequence is the block manager's business (pure Python, integer ids);
this module only allocates the storage and says how big it is.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig

FP8_DTYPES = (torch.float8_e4m3fn,)  # the fp8 cache formats (NOTE: AMD's e4m3fnuz: not yet)
FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def resolve_kv_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    """--kv-cache-dtype: "auto" (the model's dtype) or "fp8" / "fp8_e4m3" (torch.float8_e4m3fn)."""
    if name == "auto":
        return model_dtype
    if name in ("fp8", "fp8_e4m3"):
        return torch.float8_e4m3fn
    raise ValueError(f"kv_cache_dtype must be 'auto', 'fp8' or 'fp8_e4m3', got {name!r}")


def to_cache_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in the cache's dtype; into fp8, saturated at +-FP8_MAX first (torch's cast would give NaN)."""
    if dtype in FP8_DTYPES:
        return x.float().clamp(-FP8_MAX, FP8_MAX).to(dtype)
    return x.to(dtype)


def kv_cache_bytes(config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of the whole cache: layers x (K + V) x blocks x block_size x Hkv x D x itemsize."""
    per_token = config.num_kv_heads * (config.head_dim + config.v_head_dim) * dtype.itemsize
    return config.num_layers * num_blocks * block_size * per_token


def allocate_kv_cache(
    config: ModelConfig, num_blocks: int, block_size: int, *,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Zeroed caches, one (k, v) pair per layer: (num_blocks, block_size, Hkv, D) each."""
    if num_blocks < 1 or block_size < 1:
        raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must be >= 1")
    shape_k = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
    shape_v = (num_blocks, block_size, config.num_kv_heads, config.v_head_dim)
    return [
        (torch.zeros(shape_k, device=device, dtype=dtype), torch.zeros(shape_v, device=device, dtype=dtype))
        for _ in range(config.num_layers)
    ]


def kv_tokens_for_budget(config: ModelConfig, block_size: int, dtype: torch.dtype, *, total_bytes: int,
                         used_bytes: int, utilization: float) -> int:
    """Whole blocks' worth of tokens that fit in `utilization * total_bytes - used_bytes`
    (used: weights + the activation peak of a warm-up pass). 0 when nothing fits."""
    if not 0.0 < utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
    budget = int(utilization * total_bytes) - used_bytes
    per_block = kv_cache_bytes(config, 1, block_size, dtype)
    return max(0, budget // per_block) * block_size
