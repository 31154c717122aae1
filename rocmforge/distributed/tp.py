"""Turn a rocmforge CausalLM into one tensor-parallel rank's shard (slices per partition.py).

    shard_model(model, config, plan, group)      a loaded model, sliced in place (tests, small models)
    load_sharded(gguf_file, config, plan, group) load tensor by tensor, keeping only this rank's slice
                                                 (peak memory: the shard + one dequantized tensor)
    quantize_sharded(model, gguf_file, plan)     GPU: column-/row-parallel Linears -> QuantLinear
                                                 built from the GGUF blocks of the slice

Both loaders return TPCausalLM(lm): lm's layers carry the local head counts, attn_output and
ffn_down are wrapped in RowParallel, token_embd is a VocabParallelEmbedding (which the tied head
reads as its weight), and the output logits are gathered over the vocabulary.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..attention import get_backend
from ..config import ModelConfig
from ..gguf.dequant import dequantize
from ..gguf.errors import GGUFError
from ..gguf.qtypes import qtype
from ..gguf.reader import GGUFFile
from ..layers.linear import Linear
from ..models import MODELS
from ..models.base import CausalLM
from .layers import RowParallel, TPCausalLM, VocabParallelEmbedding
from .parallel_state import TPGroup
from .partition import ROW_PARALLEL, TPPlan
from .quant_split import QuantSplitError, slice_cols, slice_rows

logger = logging.getLogger("rocmforge")


def ffn_align(gguf_file: GGUFFile, config: ModelConfig) -> int:
    """Largest quant block size of the ffn_down weights: FFN bounds at its multiples keep the
    row-parallel slices whole blocks (partition.TPPlan.make)."""
    sizes = {qtype(gguf_file.tensors[f"blk.{i}.ffn_down.weight"].qtype).block_size
             for i in range(config.num_layers)}  # fmt: skip
    return max(sizes)


def _slice(t: torch.Tensor, spec: tuple[int, int, int] | None) -> torch.Tensor:
    if spec is None:
        return t
    dim, start, end = spec
    return t.narrow(dim, start, end - start).contiguous().clone()


def _load_slice(gguf_file: GGUFFile, name: str, spec: tuple[int, int, int] | None) -> torch.Tensor:
    """This rank's slice of tensor `name` in float32. A 2-D slice is cut from the GGUF blocks first
    (only its blocks are decoded); a column range that cuts a block decodes the whole, then slices."""
    info = gguf_file.tensors[name]
    if spec is None or len(info.shape) != 2:
        return _slice(gguf_file.load(name), spec)
    dim, start, end = spec
    try:
        cut = slice_cols if dim == 1 else slice_rows
        part = cut(gguf_file.raw(name), info.qtype, info.shape, start, end)
    except QuantSplitError:
        return _slice(gguf_file.load(name), spec)
    shape = (info.shape[0], end - start) if dim == 1 else (end - start, info.shape[1])
    return dequantize(part, info.qtype, shape)


def _set(model: nn.Module, name: str, value: torch.Tensor) -> None:
    path, _, attr = name.rpartition(".")
    setattr(model.get_submodule(path) if path else model, attr, nn.Parameter(value, requires_grad=False))


def _finish(lm: CausalLM, plan: TPPlan, group: TPGroup) -> TPCausalLM:
    """Local head counts, row-parallel wrappers, vocab-parallel embedding; lm's weights already sliced."""
    for layer in lm.blk:
        layer.num_heads, layer.num_kv_heads = plan.num_heads, plan.num_kv_heads
        for attr in ROW_PARALLEL:
            inner = getattr(layer, attr)
            if plan.rank != 0 and getattr(inner, "bias", None) is not None:
                inner.bias.zero_()  # added once, by rank 0
            setattr(layer, attr, RowParallel(inner, group))
    emb = lm.token_embd
    lm.token_embd = VocabParallelEmbedding(emb.weight, plan.vocab[0], scale=emb.scale, group=group)
    return TPCausalLM(lm, group, plan.vocab_sizes)


def shard_model(model: CausalLM, config: ModelConfig, plan: TPPlan, group: TPGroup) -> TPCausalLM:
    """Slice a loaded (dense) model's weights in place to `plan`'s shard and wire its collectives."""
    if any(type(m).__name__ == "QuantLinear" for m in model.modules()):
        raise ValueError("shard_model slices dense weights; shard before quantize_linears")
    for name, p in list(model.named_parameters()):
        spec = plan.param_slice(name)
        if spec is not None:
            _set(model, name, _slice(p.data, spec))
    return _finish(model, plan, group)


def load_sharded(gguf_file: GGUFFile, config: ModelConfig, plan: TPPlan, group: TPGroup, *,
                 dtype: torch.dtype = torch.float32, attention_backend: str = "torch") -> TPCausalLM:
    """Like models.load_model (the same strict name and shape checks) but only this rank's slice of
    each tensor is decoded and kept, on group.device in `dtype`."""
    if config.arch not in MODELS:
        raise GGUFError(f"{gguf_file.path}: no model for architecture {config.arch!r}; "
                        f"supported: {', '.join(MODELS)}")
    with torch.device("meta"):
        lm = MODELS[config.arch](config, get_backend(attention_backend))
    expected = dict(lm.named_parameters())  # name -> meta tensor with the full shape
    missing = [n for n in expected if n not in gguf_file.tensors]
    unexpected = [n for n in gguf_file.tensors if n not in expected]
    if missing or unexpected:
        raise GGUFError(f"{gguf_file.path}: tensors do not match the {config.arch} model (missing "
                        f"{missing[:1]}, unexpected {unexpected[:1]}); refusing a partial load")
    for name, meta_t in expected.items():
        shape = tuple(gguf_file.tensors[name].shape)
        if shape != tuple(meta_t.shape):
            raise GGUFError(f"{gguf_file.path}: tensor {name!r} has shape {shape}, the {config.arch} "
                            f"config implies {tuple(meta_t.shape)}")
        w = _load_slice(gguf_file, name, plan.param_slice(name))
        _set(lm, name, w.to(device=group.device, dtype=dtype))
    return _finish(lm.to(group.device).eval(), plan, group)


def quantize_sharded(tp: TPCausalLM, gguf_file: GGUFFile, plan: TPPlan, *, dtype: torch.dtype) -> dict:
    """Swap each sharded Linear (not the head: CausalLM reads its .weight) whose GGUF type has a
    quant kernel for a QuantLinear of its slice's blocks. A row-parallel slice that cuts a block stays
    dense (said once in the log). Returns {qtype: count}. Imports Triton: GPU installs only."""
    from ..kernels.quant_layouts import QTYPE_NAMES, split_planes
    from ..layers.quant_linear import QuantLinear

    swapped: dict[str, int] = {}
    for path, mod in list(tp.lm.named_modules()):
        parent_path, _, attr = path.rpartition(".")
        parent = tp.lm.get_submodule(parent_path) if parent_path else tp.lm
        row = isinstance(parent, RowParallel)
        name = f"{parent_path if row else path}.weight"  # GGUF name: RowParallel hides an `inner`
        info = gguf_file.tensors.get(name)
        if type(mod) is not Linear or path == "output" or info is None or info.qtype_name not in QTYPE_NAMES:
            continue
        dim, start, end = plan.param_slice(name) or (0, 0, info.shape[0])
        raw = gguf_file.raw(name)
        try:
            part = (slice_cols if dim == 1 else slice_rows)(raw, info.qtype_name, info.shape, start, end)
        except QuantSplitError as e:
            logger.info("rocmforge: %s stays dense on rank %d: %s", name, plan.rank, e)
            continue
        n_out, k = (info.shape[0], end - start) if dim == 1 else (end - start, info.shape[1])
        planes = split_planes(part.to(mod.weight.device), info.qtype_name, n_out, k)
        setattr(parent, attr, QuantLinear(planes, mod.bias, dtype))
        swapped[info.qtype_name] = swapped.get(info.qtype_name, 0) + 1
    return swapped


__all__ = ["ffn_align", "load_sharded", "quantize_sharded", "shard_model"]
