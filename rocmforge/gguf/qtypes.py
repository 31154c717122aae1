"""The GGML tensor type table, taken from gguf-py (bit-compatible with llama.cpp) in one place.

A quantized row of K elements is K / block_size blocks of type_size bytes each.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from .errors import GGUFError

# The types rocmforge dequantizes (issue 3); others are listed by gguf-py but refused at load.
SUPPORTED = (
    "F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64",
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "MXFP4",
)  # fmt: skip


@dataclass(frozen=True)
class QType:
    id: int  # GGMLQuantizationType value stored in the file
    name: str  # "Q4_K"
    block_size: int  # elements per block
    type_size: int  # bytes per block

    def row_bytes(self, n: int) -> int:
        """Bytes of a row of n elements (n must be a multiple of block_size)."""
        return n // self.block_size * self.type_size


_BY_ID = {
    int(t): QType(int(t), t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType if t in GGML_QUANT_SIZES
}
_BY_NAME = {q.name: q for q in _BY_ID.values()}


def qtype(t: int | str) -> QType:
    """Look up a type by id or name; GGUFError names the unknown one."""
    try:
        q = _BY_NAME[t.upper()] if isinstance(t, str) else _BY_ID[int(t)]
    except (KeyError, ValueError, TypeError):
        raise GGUFError(
            f"unknown GGML quant type {t!r}; known: {', '.join(SUPPORTED)}. "
            "The file may be newer than this rocmforge or corrupt."
        ) from None
    if q.name not in SUPPORTED:
        raise GGUFError(
            f"quant type {q.name} is not supported by rocmforge; supported: {', '.join(SUPPORTED)}"
        )
    return q
