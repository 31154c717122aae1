"""Synthetic GGUF files: a real model's tensor names, shapes and quant types (specs.py), random weights.

    path = ensure_synthetic("llama-3-8b-q4_k_m")             # written once, then reused from the cache
    path = ensure_synthetic("smollm2-135m-q4_1", layers=2)   # truncated: the first 2 layers only

Weights. Matrices are N(0, 0.02^2) (a usual init scale). Types gguf-py can quantize (Q8_0, Q4_1, Q5_0)
go through `gguf.quants.quantize`, 16 M elements at a time. K-quants (Q4_K, Q6_K), which gguf-py can
only dequantize, are random block bytes with their fp16 super-block scales set to finite values of
about the same spread (`random_k_blocks`). Norm weights are 1 + N(0, 0.02^2), biases N(0, 0.02^2), F32.

Tokenizer: a GPT-2 byte-level BPE of exactly the model's vocabulary size: <|bos|> (id 0) and <|eos|>
(id 1) as control tokens, the 256 byte-alphabet characters, a few English merges, then filler tokens
"<filler_N>" (decodable text, reached by no merge). Any text tokenizes; any id decodes.

The file is written with `gguf.GGUFWriter` one tensor at a time (header, KV, tensor table first; then
each tensor's data), so memory stays at one tensor (431 MB for Llama-3-8B's Q6_K head), to a temporary
name renamed into place at the end. A cached file is reused when it opens as a valid GGUF, its
`rocmforge.synthetic` metadata equals the spec asked for, and it has every planned tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

from ..gguf.pretokenizers import byte_alphabet
from ..gguf.qtypes import qtype as qtype_info
from .specs import FILE_TYPES, SyntheticSpec, get_spec, tensor_plan

FORMAT_VERSION = 1  # bump when the written data changes, so old cached files are rewritten
META_KEY = "rocmforge.synthetic"
WEIGHT_STD = 0.02
CHUNK_ELEMENTS = 1 << 24  # floats generated + quantized per chunk
NORMAL, CONTROL = 1, 3  # llama.cpp token types
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>")
MERGES = ("Ġ t", "Ġ a", "h e", "i n", "t h", "e r", "o n", "Ġ s", "r e", "a n", "Ġ th", "Ġt he")


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROCMFORGE_CACHE", Path.home() / ".cache" / "rocmforge")) / "synthetic"


# ---- weights --------------------------------------------------------------------------------------
def random_k_blocks(qt: str, n_blocks: int, rng: np.random.Generator, std: float = WEIGHT_STD) -> np.ndarray:
    """(n_blocks, type_size) uint8 random Q4_K or Q6_K blocks whose values have spread ~`std`.

    Q4_K (144 B): d f16 | dmin f16 | 12 B packed 6-bit scales sc, mins m | 128 B 4-bit q.
        x = d * sc * q - dmin * m, sc, m, q uniform: E[sc q] = 31.5 * 7.5, E[m] = 31.5, so dmin = 7.5 d
        centres x on 0; d = u * std / 300 with u ~ U(0.5, 1.5) per block gives rms(x) ~ std.
    Q6_K (210 B): 128 B low 4 bits | 64 B high 2 bits | 16 int8 scales | d f16.
        x = d * scale * (q - 32), q in 0..63, scale in -128..127: rms(scale (q - 32)) ~ 1365,
        so d = u * std / 1400.
    """
    size = qtype_info(qt).type_size
    n_words = -(-n_blocks * size // 8)
    blocks = rng.bit_generator.random_raw(n_words).view(np.uint8)[: n_blocks * size].reshape(n_blocks, size)
    u = rng.uniform(0.5, 1.5, n_blocks)
    if qt == "Q4_K":
        d = (u * std / 300.0).astype(np.float16)
        blocks[:, 0:2] = d.view(np.uint8).reshape(n_blocks, 2)
        blocks[:, 2:4] = (d * np.float16(7.5)).view(np.uint8).reshape(n_blocks, 2)
    elif qt == "Q6_K":
        blocks[:, 208:210] = (u * std / 1400.0).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    else:
        raise ValueError(f"random_k_blocks makes Q4_K or Q6_K blocks, not {qt}")
    return blocks


def tensor_data(name: str, shape: tuple[int, ...], qt: str, rng: np.random.Generator) -> np.ndarray:
    """The bytes to store: float32 array of `shape` for F32, else (rows, row_bytes) uint8 blocks."""
    if qt == "F32":
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(WEIGHT_STD)
        return x + np.float32(1.0) if name.endswith("norm.weight") else x
    rows, cols = shape
    info = qtype_info(qt)
    out = np.empty((rows, info.row_bytes(cols)), dtype=np.uint8)  # (rows, row_bytes)
    step = max(1, CHUNK_ELEMENTS // cols)
    gtype = GGMLQuantizationType[qt]
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        if qt in ("Q4_K", "Q6_K"):
            blocks = random_k_blocks(qt, (r1 - r0) * cols // info.block_size, rng)
            out[r0:r1] = blocks.reshape(r1 - r0, -1)
        else:
            x = rng.standard_normal((r1 - r0, cols), dtype=np.float32) * np.float32(WEIGHT_STD)
            out[r0:r1] = quants.quantize(x, gtype)  # (r1 - r0, row_bytes)
    return out


# ---- tokenizer ------------------------------------------------------------------------------------
def tokenizer_metadata(vocab_size: int) -> dict[str, Any]:
    """tokenizer.ggml.* for a working GPT-2 style BPE of exactly `vocab_size` tokens (module docstring)."""
    alphabet = byte_alphabet()
    tokens = list(SPECIAL_TOKENS) + [alphabet[b] for b in range(256)]
    tokens += [m.replace(" ", "") for m in MERGES]
    if vocab_size < len(tokens):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(tokens)} base tokens")
    tokens += [f"<filler_{i}>" for i in range(vocab_size - len(tokens))]
    types = [CONTROL] * len(SPECIAL_TOKENS) + [NORMAL] * (vocab_size - len(SPECIAL_TOKENS))
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": list(MERGES),
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1,
            "tokenizer.ggml.add_bos_token": True}  # fmt: skip


# ---- the file -------------------------------------------------------------------------------------
def spec_tag(spec: SyntheticSpec) -> str:
    """What the file records about how it was made; a cached file is reused only on an exact match."""
    return json.dumps({"format": FORMAT_VERSION, **dataclasses.asdict(spec)}, sort_keys=True)


def _add_metadata(w: GGUFWriter, spec: SyntheticSpec) -> None:
    a = spec.arch
    w.add_string("general.type", "model")
    w.add_string("general.name", f"synthetic {spec.name} ({spec.num_layers} layers, random weights)")
    w.add_uint32("general.file_type", FILE_TYPES[spec.ftype])
    w.add_uint32("general.quantization_version", 2)
    w.add_string(META_KEY, spec_tag(spec))
    for key, val in (("block_count", spec.num_layers), ("context_length", spec.context_length),
                     ("embedding_length", spec.hidden_size), ("feed_forward_length", spec.ffn_size),
                     ("attention.head_count", spec.num_heads), ("attention.head_count_kv", spec.num_kv_heads),
                     ("rope.dimension_count", spec.head_dim), ("vocab_size", spec.vocab_size)):  # fmt: skip
        w.add_uint32(f"{a}.{key}", val)
    w.add_float32(f"{a}.rope.freq_base", spec.rope_base)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.rms_eps)
    for key, val in tokenizer_metadata(spec.vocab_size).items():
        if isinstance(val, list):
            w.add_array(key, val)
        elif isinstance(val, bool):
            w.add_bool(key, val)
        elif isinstance(val, int):
            w.add_uint32(key, val)
        else:
            w.add_string(key, val)


def write_synthetic(spec: SyntheticSpec, path: str | os.PathLike, *, progress: bool = False) -> Path:
    """Write the synthetic GGUF of `spec` to `path` (atomically: a temporary file renamed at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    plan = tensor_plan(spec)
    w = GGUFWriter(tmp, spec.arch)
    try:
        _add_metadata(w, spec)
        for name, shape, qt in plan:
            if qt == "F32":
                w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
            else:  # NOTE: gguf-py takes a quantized tensor's shape in bytes: (rows, row_bytes)
                byte_shape = (shape[0], qtype_info(qt).row_bytes(shape[1]))
                w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), byte_shape[0] * byte_shape[1],
                                  raw_dtype=GGMLQuantizationType[qt])  # fmt: skip
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(zlib.crc32(spec_tag(spec).encode()))
        bar = _progress(sum(s[0] for _, s, _ in plan), f"writing {path.name}") if progress else None
        for name, shape, qt in plan:
            w.write_tensor_data(tensor_data(name, shape, qt, rng))
            if bar is not None:
                bar.update(shape[0])
        if bar is not None:
            bar.close()
        w.close()
        os.replace(tmp, path)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return path


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="row", unit_scale=True)


def synthetic_path(spec: SyntheticSpec, cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{spec.name}-L{spec.num_layers}.gguf"


def is_valid(path: Path, spec: SyntheticSpec) -> bool:
    """The cached file opens as a strict GGUF, was made from exactly `spec`, and has every tensor."""
    from ..gguf.errors import GGUFError
    from ..gguf.reader import GGUFFile

    if not path.is_file():
        return False
    try:
        f = GGUFFile(path)
    except (GGUFError, OSError):
        return False
    try:
        ok = f.metadata.get(META_KEY) == spec_tag(spec)
        return ok and {n: (tuple(s), q) for n, s, q in tensor_plan(spec)} == {
            n: (tuple(t.shape), t.qtype_name) for n, t in f.tensors.items()}  # fmt: skip
    finally:
        f.close()


def ensure_synthetic(name: str, layers: int | None = None, cache_dir: str | os.PathLike | None = None,
                     *, progress: bool = False) -> Path:  # fmt: skip
    """Path of the synthetic GGUF `name` (first `layers` layers), written only if no valid copy is cached."""
    spec = get_spec(name, layers)
    path = synthetic_path(spec, cache_dir)
    if not is_valid(path, spec):
        write_synthetic(spec, path, progress=progress)
    return path
