"""Slices of raw GGUF quantized weights in whole blocks, so a rank keeps only its shard's bytes.

A weight of torch shape (N, K) is N rows of K / BS blocks of TS bytes (gguf/qtypes.py). Rows split
freely (column-parallel layers: each rank's output features). Columns split only at block bounds
(row-parallel layers: each rank's input features): [c0, c1) needs c0 and c1 to be multiples of BS
(32, or 256 for the K-quants); anything else is a QuantSplitError and the caller slices the
dequantized weight instead. Float types (F32/F16/BF16) have BS = 1 and split anywhere.

    dequantize(slice_rows(raw, t, (N, K), r0, r1), t, (r1 - r0, K)) == dequantize(raw, t, (N, K))[r0:r1]
    dequantize(slice_cols(raw, t, (N, K), c0, c1), t, (N, c1 - c0)) == dequantize(raw, t, (N, K))[:, c0:c1]
"""

from __future__ import annotations

import numpy as np
import torch

from ..gguf.errors import GGUFError
from ..gguf.qtypes import QType, qtype


class QuantSplitError(GGUFError):
    """A column range that cuts through a quant block."""


def _blocks(raw, q: QType, shape: tuple[int, int]) -> torch.Tensor:  # (N, K / BS, TS) uint8
    n, k = (int(s) for s in shape)
    if k % q.block_size:
        raise GGUFError(f"{q.name}: row length {k} is not a multiple of the block size {q.block_size}")
    if isinstance(raw, np.ndarray):
        raw = torch.from_numpy(np.array(raw, dtype=np.uint8, copy=True))  # copy: mmap views are read-only
    elif isinstance(raw, bytes | bytearray | memoryview):
        raw = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    if raw.dtype != torch.uint8 or raw.numel() != n * q.row_bytes(k):
        raise GGUFError(f"{q.name}: a ({n}, {k}) weight takes {n * q.row_bytes(k)} bytes, got "
                        f"{raw.numel()} {raw.dtype}")  # fmt: skip
    return raw.reshape(n, k // q.block_size, q.type_size)


def slice_rows(raw, qt: int | str, shape: tuple[int, int], start: int, end: int) -> torch.Tensor:
    """Bytes of rows [start, end) of a (N, K) GGUF weight: (end - start, row_bytes) uint8, a copy."""
    q = qtype(qt)
    blk = _blocks(raw, q, shape)
    if not 0 <= start < end <= blk.shape[0]:
        raise ValueError(f"row range [{start}, {end}) is outside a weight of {blk.shape[0]} rows")
    return blk[start:end].reshape(end - start, -1).clone()


def slice_cols(raw, qt: int | str, shape: tuple[int, int], start: int, end: int) -> torch.Tensor:
    """Bytes of columns [start, end) of every row: (N, (end - start) / BS * TS) uint8, a copy.
    QuantSplitError when a bound is not a multiple of the block size."""
    q = qtype(qt)
    blk = _blocks(raw, q, shape)
    k = blk.shape[1] * q.block_size
    if not 0 <= start < end <= k:
        raise ValueError(f"column range [{start}, {end}) is outside a weight of {k} columns")
    if start % q.block_size or end % q.block_size:
        raise QuantSplitError(
            f"{q.name}: columns [{start}, {end}) of a {tuple(shape)} weight cut through its blocks of "
            f"{q.block_size} elements; a row-parallel slice must start and end on a block bound "
            f"(slice the dequantized weight instead, or pick a tensor-parallel size that divides it)"
        )
    bs = q.block_size
    return blk[:, start // bs : end // bs].reshape(blk.shape[0], -1).clone()


__all__ = ["QuantSplitError", "slice_cols", "slice_rows"]
