"""Shared fixtures: small GGUF files written with gguf-py's own GGUFWriter (the independent writer).

    make_gguf(name, metadata={...}, tensors={...}, arch="llama", alignment=None) -> Path

metadata values: str, bool, int (written as int32, or uint64 if it does not fit), float (float32),
lists of those, or `(value, GGUFValueType)` to pick the stored type. tensors: a float32 / float16 /
float64 / int8..int64 numpy array (stored as that plain type, shape in numpy = torch order), or
`(raw uint8 array (rows, row_bytes), "Q4_K")` for already-quantized blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter


def _add_kv(w: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, tuple):
        val, vtype = value
        sub = None
        if vtype == GGUFValueType.ARRAY:
            sub = GGUFValueType.get_type(val[0])
        w.add_key_value(key, val, vtype, sub_type=sub)
    elif isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        (w.add_int32 if -(2**31) <= value < 2**31 else w.add_uint64)(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list | tuple):
        w.add_array(key, value)
    else:
        raise TypeError(f"make_gguf: cannot store {key}={value!r}")


def write_gguf(
    path: Path,
    *,
    metadata: dict[str, Any] | None = None,
    tensors: dict[str, Any] | None = None,
    arch: str = "llama",
    alignment: int | None = None,
) -> Path:
    """Write a GGUF v3 file with GGUFWriter (general.architecture = arch comes first)."""
    w = GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value in (metadata or {}).items():
        _add_kv(w, key, value)
    for name, t in (tensors or {}).items():
        if isinstance(t, tuple):
            raw, qname = t
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=GGMLQuantizationType[qname])
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def quantize_rows(x: np.ndarray, qname: str) -> tuple[np.ndarray, str]:
    """float32 (rows, cols) -> (raw (rows, row_bytes) uint8, qname) via gguf-py's quantizer."""
    from gguf import quants

    return quants.quantize(x.astype(np.float32), GGMLQuantizationType[qname]), qname


@pytest.fixture
def make_gguf(tmp_path):
    """Factory: make_gguf("x.gguf", metadata=..., tensors=...) -> path under tmp_path."""

    def make(name: str = "model.gguf", **kwargs) -> Path:
        return write_gguf(tmp_path / name, **kwargs)

    return make


def small_model_spec(seed: int = 0) -> dict[str, Any]:
    """Metadata and tensors of a small but varied file: every value kind, plain and block types."""
    rng = np.random.default_rng(seed)
    return dict(
        metadata={
            "general.name": "tiny test model",
            "tiny.context_length": 64,
            "tiny.rope.freq_base": 10000.0,
            "tiny.use_parallel_residual": True,
            "tiny.big_count": (2**40, GGUFValueType.UINT64),
            "tokenizer.ggml.tokens": ["<s>", "</s>", "héllo", "wörld"],
            "tokenizer.ggml.scores": [0.0, -1.0, -2.5, -3.0],
            "tokenizer.ggml.token_type": [3, 3, 1, 1],
        },
        tensors={
            "norm.weight": rng.standard_normal(8).astype(np.float32),
            "emb.weight": rng.standard_normal((4, 8)).astype(np.float16),
            "pos.ids": np.arange(6, dtype=np.int32),
            "blk.0.q8": quantize_rows(rng.standard_normal((2, 64)), "Q8_0"),
            "blk.0.q4": quantize_rows(rng.standard_normal((3, 32)), "Q4_1"),
            "blk.0.k4": (_random_k_blocks(rng, 2, 144, (0, 2)), "Q4_K"),
        },
    )


def _random_k_blocks(rng, nb: int, type_size: int, scale_cols: tuple[int, ...]) -> np.ndarray:
    """nb random blocks of type_size bytes with finite fp16 scales at the given byte columns."""
    raw = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
    for c in scale_cols:
        raw[:, c : c + 2] = (rng.standard_normal((nb, 1)) * 0.01).astype(np.float16).view(np.uint8)
    return raw


@pytest.fixture
def small_gguf(tmp_path) -> Path:
    """A valid small GGUF (see small_model_spec) at tmp_path/small.gguf."""
    return write_gguf(tmp_path / "small.gguf", **small_model_spec())
