"""KV cache sizing from a memory budget: whole blocks, bytes per block from the model's shape."""

import pytest
import torch

from rocmforge.cache.kv_cache import allocate_kv_cache, kv_cache_bytes, kv_tokens_for_budget
from rocmforge.config import ModelConfig


def _config() -> ModelConfig:
    return ModelConfig(arch="llama", context_length=256, hidden_size=64, num_layers=3, num_heads=4,
                       num_kv_heads=2, head_dim=16, v_head_dim=16, ffn_size=128, vocab_size=100, rms_eps=1e-5,
                       rope_base=1e4, rope_dim=16, rope_neox=False, rope_scaling=None,
                       rope_freq_factors=False, rope_local_base=None, sliding_window=None,
                       layer_sliding=(False,) * 3, attn_scale=0.25, embed_scale=None, attn_softcap=None,
                       final_softcap=None, tied_embeddings=True, qkv_bias=False)


def test_bytes_match_allocation_and_budget_rounds_down_to_blocks():
    cfg = _config()
    kv = allocate_kv_cache(cfg, 5, 16, dtype=torch.float16)
    assert kv_cache_bytes(cfg, 5, 16, torch.float16) == sum(k.nbytes + v.nbytes for k, v in kv)
    per_block = kv_cache_bytes(cfg, 1, 16, torch.float16)  # 3 layers * 2 * 16 tokens * 2 heads * 16 * 2 B
    assert per_block == 3 * 2 * 16 * 2 * 16 * 2
    total, used = 10_000_000, 2_000_000
    tokens = kv_tokens_for_budget(cfg, 16, torch.float16, total_bytes=total, used_bytes=used, utilization=0.5)
    assert tokens % 16 == 0
    assert (tokens // 16) * per_block <= 0.5 * total - used < (tokens // 16 + 1) * per_block
    assert kv_tokens_for_budget(cfg, 16, torch.float16, total_bytes=total, used_bytes=total,
                                utilization=0.9) == 0
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        kv_tokens_for_budget(cfg, 16, torch.float16, total_bytes=total, used_bytes=0, utilization=1.5)
