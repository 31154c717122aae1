"""Dequant kernels vs gguf-py's `gguf.quants.dequantize` (the reference, bit-exact with llama.cpp).

fp32 output must match bit for bit: every product in the formats is exact in fp32 and the one add
rounds once, in gguf-py's order. fp16/bf16 output must be that fp32 value rounded to nearest-even.
NOTE: Triton 3.9's interpreter casts fp32 -> bf16 by truncation (its cast_impl passes no rounding
mode), so under TRITON_INTERPRET=1 a bf16 element may also equal the truncated value; on a GPU it
must be the round-to-nearest-even one.
"""

import os

import pytest
import torch

gguf_quants = pytest.importorskip("gguf.quants", reason="gguf-py is the dequant reference")
from gguf import GGMLQuantizationType  # noqa: E402

from rocmforge.kernels.dequant import dequantize_gpu, dequantize_planes  # noqa: E402
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, random_blocks, split_planes  # noqa: E402
from rocmforge.kernels.reference_quant import dequantize_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if DEVICE == "cpu" and not INTERPRET:
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)


def _blocks(qtype: str, n: int, k: int, seed: int, quantized: bool) -> torch.Tensor:
    """quantized=True: gguf-py's own quantizer on random floats (32-element formats only);
    else random bytes with sane fp16 scales (every quant bit pattern appears)."""
    g = torch.Generator().manual_seed(seed)
    if quantized:
        x = (torch.randn(n, k, generator=g) * 3).numpy()
        return torch.from_numpy(gguf_quants.quantize(x, GGMLQuantizationType[qtype]))
    return random_blocks(qtype, n, k, g)


def _gguf(raw: torch.Tensor, qtype: str) -> torch.Tensor:
    return torch.from_numpy(gguf_quants.dequantize(raw.numpy(), GGMLQuantizationType[qtype]).copy())


CASES = [(q, False) for q in QTYPE_NAMES] + [(q, True) for q in QTYPE_NAMES if not q.endswith("_K")]


@pytest.mark.parametrize("qtype,quantized", CASES)
def test_dequant_fp32_bit_exact(qtype, quantized):
    n, k = 7, 768 if qtype.endswith("_K") else 160  # odd rows; K not a multiple of the kernel tile
    raw = _blocks(qtype, n, k, seed=2 * QTYPE_NAMES.index(qtype) + quantized, quantized=quantized)
    ref = _gguf(raw, qtype)  # (N, K) fp32
    out = dequantize_gpu(raw.to(DEVICE), qtype, (n, k), torch.float32).cpu()
    assert torch.isfinite(ref).all()
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32)), f"{qtype}: not bit-exact"
    assert torch.equal(dequantize_ref(raw, qtype, (n, k)).view(torch.int32), ref.view(torch.int32))


@pytest.mark.parametrize("qtype", QTYPE_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dequant_half_is_rounded_fp32(qtype, dtype):
    n, k = 5, 512
    raw = _blocks(qtype, n, k, seed=7, quantized=False)
    ref = _gguf(raw, qtype)
    out = dequantize_gpu(raw.to(DEVICE), qtype, (n, k), dtype).cpu()
    assert out.dtype == dtype and out.shape == (n, k)
    rne = ref.to(dtype)
    if dtype == torch.bfloat16 and INTERPRET:
        rtz = (ref.view(torch.int32) & ~0xFFFF).view(torch.float32).to(dtype)  # exact, drops low bits
        assert ((out == rne) | (out == rtz)).all()
    else:
        assert torch.equal(out, rne)


@pytest.mark.parametrize("qtype", QTYPE_NAMES)
def test_dequant_rows_gathers_exact_rows(qtype):
    """rows= (an embedding lookup): out[t] is row ids[t] of the full dequant, bit for bit."""
    n, k = 37, 512
    raw = _blocks(qtype, n, k, seed=11, quantized=False)
    w = split_planes(raw.to(DEVICE), qtype, n, k)
    ids = torch.tensor([36, 0, 5, 5, 17, 36, 2, 9, 30, 1, 11], device=DEVICE)  # repeats, > one row tile
    out = dequantize_planes(w, torch.float32, rows=ids).cpu()
    assert torch.equal(out.view(torch.int32), _gguf(raw, qtype)[ids.cpu()].view(torch.int32))
    with pytest.raises(ValueError, match="1-D int64"):
        dequantize_planes(w, torch.float32, rows=ids.int())


def test_split_planes_keeps_every_byte():
    raw = _blocks("Q5_K", 3, 512, seed=1, quantized=False)
    w = split_planes(raw, "Q5_K", 3, 512)
    assert w.nbytes == raw.numel()
    assert sorted(torch.cat([w.d.view(torch.uint8).flatten(), w.m.view(torch.uint8).flatten(), w.sc.flatten(),
                             w.h.flatten(), w.q.flatten()]).tolist()) == sorted(raw.flatten().tolist())


def test_bad_shape_names_the_problem():
    with pytest.raises(ValueError, match="multiple of 256"):
        dequantize_gpu(torch.zeros(2, 144, dtype=torch.uint8), "Q4_K", (2, 100))
    with pytest.raises(ValueError, match="no GPU kernel"):
        dequantize_gpu(torch.zeros(2, 144, dtype=torch.uint8), "IQ2_XS", (2, 256))
