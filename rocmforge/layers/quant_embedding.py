"""Token embedding whose table stays GGUF-quantized on the GPU: a lookup dequantizes only the T rows it
reads (kernels/dequant.py, GATHER), bit-for-bit the rows of the exactly dequantized table rounded to
the model dtype, then Gemma's scale like `Embedding`. An untied 8B's Q4_K table is 0.30 GB this way
instead of 1.05 GB of bf16.

A tied table stays dense: it is also the head, which cuBLAS reads as bf16 at every batch size, where
the quantized matmul would dequantize the whole table each step above 16 rows (quant_matmul.choose_path).
"""

from __future__ import annotations

import torch
from torch import nn

from ..gguf.reader import GGUFFile
from ..kernels.dequant import dequantize_planes
from ..kernels.quant_layouts import QTYPE_NAMES, QuantWeight, split_planes
from .embedding import Embedding
from .quant_linear import raw_rows


class QuantEmbedding(nn.Module):
    def __init__(self, weight: QuantWeight, dtype: torch.dtype, scale: float | None):
        super().__init__()
        self.qweight, self.dtype, self.scale = weight, dtype, scale
        self.num_embeddings, self.embedding_dim = weight.n_out, weight.k

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (T,) int64 -> (T, dim) self.dtype
        x = dequantize_planes(self.qweight, self.dtype, rows=ids.reshape(-1).long())
        return x * self.scale if self.scale is not None else x

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, qtype={self.qweight.qtype}"


def quantize_embedding(model: nn.Module, gguf_file: GGUFFile, *, dtype: torch.dtype) -> str | None:
    """Swap the untied `token_embd` Embedding for a QuantEmbedding of its GGUF blocks (on the table's
    device; the dense table is dropped). Returns the quant type, or None when it stays dense (tied,
    or a type with no kernel)."""
    emb = getattr(model, "token_embd", None)
    info = gguf_file.tensors.get("token_embd.weight")
    if type(emb) is not Embedding or info is None or info.qtype_name not in QTYPE_NAMES:
        return None
    if model.config.tied_embeddings and model._modules.get("output") is None:
        return None  # the table is the head too (module docstring)
    n, k = info.shape
    raw = raw_rows(gguf_file, info.name, emb.weight.device)  # (vocab, row bytes)
    model.token_embd = QuantEmbedding(split_planes(raw, info.qtype_name, n, k), dtype, emb.scale)
    return info.qtype_name


__all__ = ["QuantEmbedding", "quantize_embedding"]
