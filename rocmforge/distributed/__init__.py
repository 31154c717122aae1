"""Tensor parallelism over torch.distributed (NCCL on GPU, gloo on CPU): Megatron-style shards.

    partition.py       which slice of each weight a rank holds (heads split by KV-head groups)
    quant_split.py     slices of raw GGUF blocks (rows anywhere, columns on block bounds)
    parallel_state.py  the process group and its collectives (TPGroup)
    layers.py          RowParallel, VocabParallelEmbedding, TPCausalLM (gathers the logits)
    tp.py              shard_model / load_sharded / quantize_sharded
    step.py            rank 0's model proxy, the workers' replay loop, TPEngine
    launch.py          TensorParallelLLM (rocmforge.LLM over N processes), generate_tp

Imports nothing heavy: launch is loaded on first use of its names.
"""

from __future__ import annotations

from .partition import TPPlan, split_even, split_heads


def __getattr__(name: str):
    if name in ("TensorParallelLLM", "generate_tp"):
        from . import launch

        return getattr(launch, name)
    raise AttributeError(name)


__all__ = ["TPPlan", "TensorParallelLLM", "generate_tp", "split_even", "split_heads"]
