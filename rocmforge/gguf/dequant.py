"""Dequantization of every GGML block format to float32 torch tensors, vectorized over blocks.

A tensor of K-element rows is stored as K / BS blocks of TS bytes (qtypes.py). Each decoder maps
a batch of blocks, `(nb, TS)` uint8, to `(nb, BS)` float32; `dequantize` feeds it whole chunks of
blocks (no Python loop over blocks) and writes straight into the output.

Legacy 32-element blocks (fp16 scales d, m are widened to fp32 first, then):

    Q4_0  w = d * (q - 8)       q: 4 bits; bytes qs[16] hold element j in the low nibble of qs[j]
    Q4_1  w = (d * q) + m          and element j + 16 in the high nibble
    Q5_0  w = d * (q - 16)      q = nibble | (bit j of the little-endian u32 qh) << 4
    Q5_1  w = (d * q) + m
    Q8_0  w = d * q             q: int8
    MXFP4 w = d * v[q]          v = doubled e2m1 values; d = 2^(e - 128) from the e8m0 byte e

The K-quants (256-element super-blocks) and the shared helpers live in dequant_k.py. Bit-exact
with gguf-py means the same fp32 operations in the same order: the integer part q (and q - 8 etc.)
is exact in fp32, each product is rounded to fp32 before the add (never fused: no addcmul / FMA),
and products are formed in place as q * d, which IEEE multiplication makes identical to d * q.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from .dequant_k import K_DECODERS, f16_col, fields, nibbles_into
from .errors import GGUFError
from .qtypes import qtype

# Plain (non-block) types: the stored dtype, converted to float32 by one cast.
_PLAIN = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
}  # fmt: skip

# MXFP4: the 16 e2m1 codes, doubled so they are integers (the scale is halved to compensate).
_MXFP4_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)

# Elements decoded per step: bounds the temporaries (about this many fp32 values, a few MB) while
# keeping each torch op large enough to amortize its dispatch and use all intra-op threads.
CHUNK_ELEMENTS = 1 << 19


def _q4_0(b: torch.Tensor, out: torch.Tensor) -> None:
    nibbles_into(out, b, 2, 18, 16)
    out.sub_(8).mul_(f16_col(b, 0))


def _q4_1(b: torch.Tensor, out: torch.Tensor) -> None:
    nibbles_into(out, b, 4, 20, 16)
    out.mul_(f16_col(b, 0)).add_(f16_col(b, 2))


def _q5_0(b: torch.Tensor, out: torch.Tensor) -> None:
    nibbles_into(out, b, 6, 22, 16)
    out.add_(fields(b, 2, 6, "bits").view(-1, 32), alpha=16)  # bit j of the u32 qh -> element j
    out.sub_(16).mul_(f16_col(b, 0))


def _q5_1(b: torch.Tensor, out: torch.Tensor) -> None:
    nibbles_into(out, b, 8, 24, 16)
    out.add_(fields(b, 4, 8, "bits").view(-1, 32), alpha=16)
    out.mul_(f16_col(b, 0)).add_(f16_col(b, 2))


def _q8_0(b: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(b[:, 2:34].view(torch.int8))
    out.mul_(f16_col(b, 0))


def _mxfp4(b: torch.Tensor, out: torch.Tensor) -> None:
    # NOTE: d = ggml's e8m0 "half" scale built from bits: e < 2 gives the subnormals 2^-128 and
    # 2^-127 (0x00200000 << e), otherwise the normal number with biased exponent e - 1.
    nb = b.shape[0]
    e = b[:, 0:1].to(torch.int32)  # (nb, 1)
    bits = torch.where(e < 2, torch.full_like(e, 0x00200000) << e, (e - 1) << 23)
    values = _mxfp4_table(b.device)  # (256, 2): both nibbles' e2m1 values of every byte
    out.view(nb, 2, 16).copy_(F.embedding(b[:, 1:17].int(), values).transpose(1, 2))
    out.mul_(bits.view(torch.float32))


@cache
def _mxfp4_table(device: torch.device) -> torch.Tensor:
    v = torch.tensor(_MXFP4_VALUES, dtype=torch.float32)
    byte = torch.arange(256)
    return torch.stack((v[byte & 15], v[byte >> 4]), dim=1).to(device)


def _plain(dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def decode(b: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(b.view(dtype))  # (nb, 1): one element per "block"

    return decode


DECODERS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    **{name: _plain(dt) for name, dt in _PLAIN.items()},
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "MXFP4": _mxfp4,
    **K_DECODERS,
}  # fmt: skip


def _as_bytes(raw) -> torch.Tensor:
    """raw bytes-like / uint8 numpy array / uint8 torch tensor -> flat uint8 torch tensor (no copy)."""
    if isinstance(raw, torch.Tensor):
        if raw.dtype != torch.uint8:
            raise GGUFError(f"dequantize: raw must hold uint8 bytes, got a torch {raw.dtype} tensor")
        raw = raw.reshape(-1)
        # NOTE: viewing bytes as fp16/fp32/int64 needs an element-aligned storage offset.
        return raw.clone() if raw.storage_offset() % 8 else raw
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = np.frombuffer(raw, dtype=np.uint8)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        what = f"numpy {raw.dtype}" if isinstance(raw, np.ndarray) else type(raw).__name__
        raise GGUFError(f"dequantize: raw must be bytes or a uint8 array, got {what}")
    with warnings.catch_warnings():
        # NOTE: raw is usually a read-only view into the file's mmap; we only ever read it.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(np.ascontiguousarray(raw).reshape(-1))


def dequantize(raw, qt: int | str, shape) -> torch.Tensor:
    """Decode whole blocks of GGML type `qt` into a float32 tensor of `shape` (torch order).

    raw: the tensor's bytes (bytes, uint8 numpy array or uint8 torch tensor), whole blocks only.
    qt: a GGML type name ("Q4_K") or its integer id. shape: (..., rows, cols), the reverse of
    GGUF's ne; cols must be a multiple of the type's block size. Returns a new float32 tensor
    (never a view of raw) on raw's device. Raises GGUFError for an unknown type, a bad shape or
    a byte count that does not match.
    """
    q = qtype(qt)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise GGUFError(f"dequantize: shape must be a tuple of ints, got {shape!r}") from None
    if not shape or any(s < 0 for s in shape):
        raise GGUFError(f"dequantize: invalid shape {shape} (need at least one dimension, none negative)")
    if shape[-1] % q.block_size:
        raise GGUFError(
            f"{q.name}: row length {shape[-1]} of shape {shape} is not a multiple of the "
            f"block size {q.block_size}"
        )
    buf = _as_bytes(raw)
    n = 1
    for s in shape:
        n *= s
    nb = n // q.block_size
    if buf.numel() != nb * q.type_size:
        raise GGUFError(
            f"{q.name}: a tensor of shape {shape} takes {nb * q.type_size} bytes "
            f"({nb} blocks of {q.type_size}), got {buf.numel()}"
        )
    out = torch.empty((nb, q.block_size), dtype=torch.float32, device=buf.device)  # (nb, BS)
    blocks = buf.view(nb, q.type_size)  # (nb, TS)
    decode = DECODERS[q.name]
    step = max(1, CHUNK_ELEMENTS // q.block_size)
    for i in range(0, nb, step):
        decode(blocks[i : i + step], out[i : i + step])
    return out.view(shape)
