"""rocmforge.gguf.dequantize is bit-exact with gguf-py's numpy reference for every supported type.

Bit-exact: same float32 bits everywhere (so -0.0 != 0.0), NaN-aware (NaN payloads may differ
between numpy's and torch's fp16 widening, so NaN positions must match but not their bits).
Inputs: gguf-py's quantizer output where it has one (F16, BF16, Q4_0..Q8_0, MXFP4), and random
block bytes with finite fp16 scales for every block type (gguf-py has no K-quant quantizer).
References: gguf.quants.dequantize; for the types it lacks (F64, I8..I64, Q8_K) numpy casts and
a numpy twin of Q8_K's layout (w = d · q, d fp32 at byte 0, int8 q at bytes 4..260).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from rocmforge.gguf import GGUFError, GGUFFile, dequantize
from rocmforge.gguf.dequant import CHUNK_ELEMENTS

# fp16 scale byte columns of each block type (ggml's block structs); Q8_K has an fp32 d at 0.
FP16_SCALES = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "MXFP4": (),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q8_K": (),
}  # fmt: skip
PLAIN = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64,
         "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}  # fmt: skip
ALL_TYPES = [*PLAIN, *FP16_SCALES]
QUANTIZABLE = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4"]


def sizes(qname: str) -> tuple[int, int]:
    return GGML_QUANT_SIZES[GGMLQuantizationType[qname]]


def reference(raw: np.ndarray, qname: str) -> torch.Tensor:
    """raw (..., row_bytes) uint8 -> (..., cols) float32 from an independent implementation."""
    with np.errstate(all="ignore"):  # random F64 / MXFP4 bits overflow to inf: fine, compared too
        if qname in ("F64", "I8", "I16", "I32", "I64"):
            ref = raw.view(PLAIN[qname]).astype(np.float32)
        elif qname == "Q8_K":
            b = raw.reshape(-1, sizes("Q8_K")[1])
            d = np.ascontiguousarray(b[:, 0:4]).view(np.float32)  # (nb, 1)
            ref = (d * b[:, 4:260].view(np.int8).astype(np.float32)).reshape(*raw.shape[:-1], -1)
        else:
            ref = quants.dequantize(raw, GGMLQuantizationType[qname])
    return torch.from_numpy(np.array(ref, dtype=np.float32))


def assert_bitexact(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.dtype == torch.float32, what
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    if torch.equal(ours.view(torch.int32), ref.view(torch.int32)):
        return  # identical bits (NaNs included)
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(ours), nan), f"{what}: NaN positions differ"
    a, b = ours[~nan].view(torch.int32), ref[~nan].view(torch.int32)
    bad = (a != b).nonzero()
    assert bad.numel() == 0, (
        f"{what}: {bad.numel()} of {a.numel()} values differ, first at flat index {bad[0].item()}: "
        f"ours {ours[~nan][bad[0]].item()!r} ref {ref[~nan][bad[0]].item()!r}"
    )


def random_blocks(rng, qname: str, n_blocks: int) -> np.ndarray:
    """Random bytes for n_blocks blocks; fp16/fp32 scales replaced by finite normal values."""
    bs, ts = sizes(qname)
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    for c in FP16_SCALES.get(qname, ()):
        raw[:, c : c + 2] = (rng.standard_normal((n_blocks, 1)) * 0.02).astype(np.float16).view(np.uint8)
    if qname == "Q8_K":
        raw[:, 0:4] = (rng.standard_normal((n_blocks, 1)) * 0.02).astype(np.float32).view(np.uint8)
    return raw


def shapes_for(qname: str) -> list[tuple[int, ...]]:
    bs = sizes(qname)[0]
    big_rows = 2 * CHUNK_ELEMENTS // (4 * bs) + 3  # > 2 chunks and not a multiple of one
    return [(bs,), (1, bs), (3, 2 * bs), (2, 3, 4 * bs), (big_rows, 4 * bs)]


@pytest.mark.parametrize("qname", ALL_TYPES)
def test_random_bytes_bitexact(qname):
    rng = np.random.default_rng(sum(map(ord, qname)))
    bs, ts = sizes(qname)
    for shape in shapes_for(qname):
        n = int(np.prod(shape))
        raw = random_blocks(rng, qname, n // bs).reshape(*shape[:-1], shape[-1] // bs * ts)
        ours = dequantize(raw, qname, shape)
        assert_bitexact(ours, reference(raw, qname), f"{qname} {shape}")


@pytest.mark.parametrize("qname", QUANTIZABLE)
def test_quantized_data_bitexact(qname):
    """Realistic blocks: gguf-py quantizes weights with outliers, zero rows and tiny values."""
    rng = np.random.default_rng(7)
    bs = sizes(qname)[0]
    scale = rng.uniform(1e-3, 3, (40, 1)).astype(np.float32)  # per-row magnitude
    x = rng.standard_normal((40, 8 * bs)).astype(np.float32) * scale
    x[0] = 0.0
    x[1, ::7] = 1e4
    x[2] *= 1e-6
    x[3, :bs] = -x[3, :bs].__abs__()
    raw = quants.quantize(x, GGMLQuantizationType[qname])
    assert raw.dtype != np.uint8 or raw.shape[-1] == 8 * sizes(qname)[1]
    raw = raw.view(np.uint8)
    ours = dequantize(raw, qname, x.shape)
    assert_bitexact(ours, reference(raw, qname), f"{qname} quantized")


def test_gguf_py_has_no_k_quantizer():
    """Why the K-quants are tested on random blocks: if this starts failing, quantize them too."""
    for qname in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"):
        with pytest.raises(NotImplementedError):
            quants.quantize(np.zeros((1, 256), np.float32), GGMLQuantizationType[qname])


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "numpy", "torch", "torch_offset"])
def test_raw_input_kinds_and_no_aliasing(kind):
    rng = np.random.default_rng(1)
    raw = random_blocks(rng, "Q4_K", 4)  # (4, 144)
    ref = reference(raw, "Q4_K").reshape(2, 512)
    arg = {
        "bytes": lambda: raw.tobytes(),
        "bytearray": lambda: bytearray(raw.tobytes()),
        "numpy": lambda: raw,
        "torch": lambda: torch.from_numpy(raw.copy()),
        "torch_offset": lambda: torch.from_numpy(np.concatenate([[7], raw.ravel()]).astype(np.uint8))[1:],
    }[kind]()
    ours = dequantize(arg, "Q4_K", (2, 512))
    assert_bitexact(ours, ref, kind)
    # F32 must be a copy, not a view of the (possibly read-only, mmap-backed) input
    f = np.arange(8, dtype=np.float32)
    out = dequantize(f.view(np.uint8), GGMLQuantizationType.F32, (8,))
    out += 1
    assert f[0] == 0.0 and out[0] == 1.0


def test_errors_name_the_problem():
    raw = np.zeros(144, np.uint8)
    cases = [
        (lambda: dequantize(raw[:-1], "Q4_K", (1, 256)), ["Q4_K", "143", "144"]),
        (lambda: dequantize(raw, "Q4_K", (1, 128)), ["Q4_K", "128", "block size 256"]),
        (lambda: dequantize(raw, "Q9_9", (1, 256)), ["unknown", "Q9_9"]),
        (lambda: dequantize(raw, 9999, (1, 256)), ["unknown", "9999"]),
        (lambda: dequantize(raw, "IQ2_XXS", (1, 256)), ["IQ2_XXS", "not supported"]),
        (lambda: dequantize(raw.astype(np.int16), "Q4_K", (1, 256)), ["uint8", "int16"]),
        (lambda: dequantize(raw, "Q4_K", (-1, 256)), ["shape"]),
        (lambda: dequantize(raw, "Q4_K", ()), ["shape"]),
        (lambda: dequantize("abc", "Q4_K", (1, 256)), ["bytes", "str"]),
    ]
    for fn, words in cases:
        with pytest.raises(GGUFError) as e:
            fn()
        for w in words:
            assert w in str(e.value), f"{w!r} not in {str(e.value)!r}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU: dequant of device bytes")
def test_device_bytes_match_cpu():
    rng = np.random.default_rng(2)
    for qname in ("Q4_K", "Q6_K", "Q5_0", "MXFP4", "BF16"):
        bs = sizes(qname)[0]
        raw = random_blocks(rng, qname, 64)
        shape = (8, 8 * bs)
        gpu = dequantize(torch.from_numpy(raw).cuda(), qname, shape).cpu()
        assert_bitexact(gpu, dequantize(raw, qname, shape), f"{qname} on GPU")


# -- every tensor of the real models --------------------------------------------------------------
MAX_TENSOR_BYTES = {"smollm2": None, "gemma3": 256 << 10, "qwen2.5-coder": 256 << 10}


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MAX_TENSOR_BYTES))
def test_real_model_tensors_bitexact(model):
    """smollm2: every tensor whole, through GGUFFile.load. gemma3 / qwen2.5-coder: every tensor,
    large ones cut to evenly spaced whole rows (first and last included) of at most 256 KiB."""
    from rocmforge.hub import resolve_model

    try:
        path = resolve_model(model)
    except Exception as e:  # no network and no cache: say so
        pytest.skip(f"model {model!r} not available: {e}")
    f = GGUFFile(path)
    cap, seen = MAX_TENSOR_BYTES[model], set()
    for name, t in f.tensors.items():
        cols = t.shape[-1]
        rows = t.n_elements // cols
        raw = f.raw(name).reshape(rows, -1)
        if cap is None:
            ours = f.load(name).reshape(rows, cols)
        else:
            keep = max(2, min(rows, cap // raw.shape[1]))
            idx = np.unique(np.linspace(0, rows - 1, keep).round().astype(np.int64))
            raw = raw[idx]
            ours = dequantize(raw, t.qtype_name, (len(idx), cols))
        assert_bitexact(ours, reference(raw, t.qtype_name), f"{model} {name} {t.qtype_name}")
        seen.add(t.qtype_name)
    assert seen & set(FP16_SCALES), f"{model}: no block-quantized tensor seen ({seen})"
