"""quant_matmul (GEMV, GEMM, dequant+matmul paths) vs a float64 twin: exact dequant, then x @ W^T.
On a CUDA GPU the GEMV decodes with inline-PTX lop3 (quant_gemv ASM=True); under the interpreter
with the plain integer ops: both paths are covered by running this file in both places.

Tolerance, per element, with A = |x| @ |W|^T (the sum of the magnitudes of the products):
    |out - ref| <= eps_out * |ref| + eps_w * A + 1e-5 * A
eps_out: the output is rounded once to x's dtype (2^-11 fp16, 2^-8 bf16; we allow 2 half-ulps;
2^-7 for bf16 under the interpreter, which truncates).
eps_w: GEMM and dequant_mm round W to x's dtype before the tensor-core product (same eps); the
GEMV keeps W exact in fp32 (eps_w = 0). 1e-5 * A covers fp32 accumulation over K <= 1024.
"""

import os

import pytest
import torch

from rocmforge.kernels.arch import current_arch
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, random_blocks, split_planes
from rocmforge.kernels.quant_matmul import GEMV_MAX_M, choose_path, qgemv, quant_matmul
from rocmforge.kernels.reference_quant import dequantize_ref, quant_matmul_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if DEVICE == "cpu" and not INTERPRET:
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)
EPS = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# NOTE: the interpreter casts fp32 -> bf16 by truncation (up to a whole ulp, 2^-7 relative).
EPS_OUT = {**EPS, torch.bfloat16: 2.0**-7 if INTERPRET else 2.0**-8}


def _check(out, x, raw, qtype, n, exact_w):
    ref = quant_matmul_ref(x.cpu(), raw, qtype, n)  # (M, N) float64
    a = x.cpu().double().abs() @ dequantize_ref(raw, qtype, (n, x.shape[1])).double().abs().T
    eps = EPS[x.dtype]
    tol = EPS_OUT[x.dtype] * ref.abs() + (0 if exact_w else eps) * a + 1e-5 * a
    err = (out.cpu().double() - ref).abs()
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert torch.isfinite(out.cpu()).all()
    assert (err <= tol).all(), f"max err/tol {(err / tol).max().item():.2f}"


def _case(qtype, m, n, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    raw = random_blocks(qtype, n, k, g)
    x = torch.randn(m, k, generator=g).to(dtype)
    return raw, split_planes(raw.to(DEVICE), qtype, n, k), x.to(DEVICE)


@pytest.mark.parametrize("qtype", QTYPE_NAMES)
@pytest.mark.parametrize("m", [1, 3, 8, 16, 17])
@pytest.mark.parametrize("path", ["gemv", "gemm", "dequant_mm"])
def test_quant_matmul_paths(qtype, m, path):
    if path == "gemv" and m > GEMV_MAX_M:
        pytest.skip(f"the GEMV path takes at most {GEMV_MAX_M} rows")
    if path != "gemv" and m == 8:
        pytest.skip("M = 8 only adds a GEMV case (the other paths have no BM = 8 special case)")
    dtype = torch.bfloat16 if (m % 2 and not (INTERPRET and path == "gemm")) else torch.float16
    # NOTE: Triton 3.9's interpreter multiplies bf16 tl.dot operands as raw uint16 bit patterns,
    # so bf16 GEMM is checked on GPUs only; under the interpreter the GEMM runs in fp16.
    k = 1280 if path == "gemv" else 512  # GEMV: several K steps, a partial last one (NW = 64 words)
    n = 37 if path == "gemv" else 13  # GEMV: a partial last slab of BN = 32 rows
    raw, w, x = _case(qtype, m, n, k, dtype, seed=QTYPE_NAMES.index(qtype) * 31 + m)
    out = quant_matmul(x, w, path=path)
    _check(out, x, raw, qtype, w.n_out, exact_w=path == "gemv")


@pytest.mark.parametrize("qtype", ["Q4_0", "Q6_K"])
def test_gemv_split_k_matches(qtype):
    raw, w, x = _case(qtype, 2, 9, 1024, torch.float16, seed=5)
    _check(qgemv(x, w, split_k=3), x, raw, qtype, 9, exact_w=True)  # 3 uneven K slices, one reduce
    _check(qgemv(x[:1], w, split_k=2), x[:1], raw, qtype, 9, exact_w=True)
    assert torch.equal(qgemv(x, w, split_k=3), qgemv(x, w, split_k=3))  # fixed order: deterministic


@pytest.mark.parametrize("split_k,path", [(1, "gemv"), (3, "gemv"), (None, "dequant_mm")])
def test_bias_is_added(split_k, path):
    """bias (N,): in fp32 by the split-K reduce, after the matmul on the other paths."""
    raw, w, x = _case("Q8_0", 2, 9, 1024, torch.float16, seed=6)
    bias = torch.randn(9, generator=torch.Generator().manual_seed(7)).to(torch.float16).to(DEVICE)
    if path == "gemv":
        out = qgemv(x, w, split_k=split_k, bias=bias)
    else:
        out = quant_matmul(x, w, path=path, bias=bias)
    ref = quant_matmul_ref(x.cpu(), raw, "Q8_0", 9) + bias.cpu().double()
    torch.testing.assert_close(out.cpu().double(), ref, atol=2e-2, rtol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tensor-core GEMM needs a GPU")
@pytest.mark.parametrize("qtype", QTYPE_NAMES)
def test_gemm_bf16_large_tiles_gpu(qtype):
    raw, w, x = _case(qtype, 300, 257, 1024, torch.bfloat16, seed=11)
    _check(quant_matmul(x, w, path="gemm"), x, raw, qtype, 257, exact_w=False)


def test_default_path_and_raw_bytes():
    raw, w, x = _case("Q8_0", 2, 7, 256, torch.float16, seed=3)
    path = choose_path(2, current_arch(x.device), "Q8_0")
    out = quant_matmul(x, raw.to(DEVICE), "Q8_0", 7)  # raw bytes: split into planes on the call
    assert torch.equal(out, quant_matmul(x, w, path=path))
    if path != "gemv_i8":  # the integer-dot path quantizes x: its own twin, test_quant_gemv_i8.py
        _check(out, x, raw, "Q8_0", 7, exact_w=False)


def test_errors_are_for_people():
    _, w, x = _case("Q4_0", 1, 4, 64, torch.float16, seed=0)
    with pytest.raises(ValueError, match=r"x must be \(M, 64\)"):
        quant_matmul(x[:, :32], w)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        quant_matmul(x.float(), w)
    with pytest.raises(ValueError, match="1..8 rows"):
        qgemv(torch.zeros(9, 64, dtype=torch.float16, device=DEVICE), w)
    with pytest.raises(ValueError, match="qtype= and n_out="):
        quant_matmul(x, torch.zeros(4, 36, dtype=torch.uint8, device=DEVICE))
