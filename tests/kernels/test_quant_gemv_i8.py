"""The integer-dot GEMV (quant_gemv_i8) and its activation quantizer (quantize_act) vs torch twins.

quantize_act must be bit-exact with quantize_act_ref (same fp32 ops, IEEE division, rint by the
1.5·2^23 trick). The GEMV is compared with quant_matmul_i8_ref: the exact dequantized weight times
the exactly dequantized int8 x, in float64. Its integer dot products are exact, so the only errors
are fp32 rounding of the per-plane scale products and sums and the one rounding of the output:

    |out - ref| <= eps_out · |ref| + 2^-20 · A,   A = |xd·xq| @ |W|^T

(eps_out: 2 half-ulps of x's dtype, 2^-7 for bf16 under the interpreter, which truncates; 2^-20 A
covers ~K/16 fp32 adds of terms ≤ A with 2^-24 relative error each, K ≤ 1280 here.)
On CUDA the dot is PTX dp4a (ASM on); under the interpreter the shift/multiply twin; on a GPU both
run and must agree bit for bit.
"""

import os

import pytest
import torch

from rocmforge.kernels.quant_gemv_i8 import GEMV_I8_MAX_M, qgemv_i8
from rocmforge.kernels.quant_layouts import QTYPE_NAMES, random_blocks, split_planes
from rocmforge.kernels.quantize_act import quantize_act
from rocmforge.kernels.reference_quant import dequantize_ref, quant_matmul_i8_ref, quantize_act_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if DEVICE == "cpu" and not INTERPRET:
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)
EPS_OUT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-7 if INTERPRET else 2.0**-8}


def _case(qtype, m, n, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    raw = random_blocks(qtype, n, k, g)
    x = (torch.randn(m, k, generator=g) * torch.rand(m, k // 32, 1, generator=g).repeat_interleave(32, 1)
         .reshape(m, k)).to(dtype)  # group scales that differ from group to group
    x[0, :32] = 0  # an all-zero group: scale 0, no division by zero
    return raw, split_planes(raw.to(DEVICE), qtype, n, k), x.to(DEVICE)


def _check(out, x, raw, qtype, n):
    ref = quant_matmul_i8_ref(x.cpu().float(), raw, qtype, n)  # (M, N) float64
    xq, xd, _ = quantize_act_ref(x.cpu())
    m, k = x.shape
    xv = (xq.double().reshape(m, k // 32, 32) * xd.double()[..., None]).reshape(m, k)
    a = xv.abs() @ dequantize_ref(raw, qtype, (n, k)).double().abs().T
    tol = EPS_OUT[x.dtype] * ref.abs() + 2.0**-20 * a
    err = (out.cpu().double() - ref).abs()
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert (err <= tol).all(), f"max err/tol {(err / tol).max().item():.2f}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [64, 1056])
def test_quantize_act_bit_exact(dtype, k):
    g = torch.Generator().manual_seed(k)
    x = (torch.randn(3, k, generator=g) * 40).to(dtype)
    x[1, 32:64] = 0
    x[2, :4] = torch.tensor([1.5, -2.5, 127.0, -127.0]).to(dtype)  # exact ties after scaling
    got = quantize_act(x.to(DEVICE))
    want = quantize_act_ref(x)
    for name, a, b in zip(("xq", "xd", "xs"), got, want):
        assert torch.equal(a.cpu(), b), name
    assert want[0].abs().max() == 127 and (want[1][1, 1] == 0)


@pytest.mark.parametrize("qtype", QTYPE_NAMES)
@pytest.mark.parametrize("m", [1, 3])
def test_gemv_i8_matches_twin(qtype, m):
    """N = 37: a partial row slab; K = 1280: a partial last step (masks on, EVEN off)."""
    dtype = torch.bfloat16 if m == 1 else torch.float16
    raw, w, x = _case(qtype, m, 37, 1280, dtype, seed=QTYPE_NAMES.index(qtype) * 7 + m)
    _check(qgemv_i8(x, w), x, raw, qtype, 37)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q8_0", "Q5_0"])
def test_gemv_i8_even_tiles_and_split_k(qtype):
    """N = 32, K = 2048: full tiles, so the unmasked (EVEN) loads run; split-K sums in fixed order."""
    raw, w, x = _case(qtype, 2, 32, 2048, torch.float16, seed=11)
    for split_k in (1, 2):
        _check(qgemv_i8(x, w, split_k=split_k), x, raw, qtype, 32)
    _check(qgemv_i8(x[:1], w, split_k=1), x[:1], raw, qtype, 32)
    assert torch.equal(qgemv_i8(x, w, split_k=2), qgemv_i8(x, w, split_k=2))


def test_gemv_i8_bias_and_errors():
    raw, w, x = _case("Q8_0", 2, 32, 512, torch.float16, seed=3)
    bias = torch.randn(32, generator=torch.Generator().manual_seed(4)).to(torch.float16).to(DEVICE)
    want = qgemv_i8(x, w, split_k=1).float() + bias.float()
    for split_k in (1, 2):
        got = qgemv_i8(x, w, split_k=split_k, bias=bias).float()
        assert torch.allclose(got, want, rtol=2.0**-10, atol=1e-3)
    with pytest.raises(ValueError, match="rows"):
        qgemv_i8(x.repeat(GEMV_I8_MAX_M, 1), w)
    with pytest.raises(ValueError, match="row-contiguous"):
        qgemv_i8(x.float(), w)


@pytest.mark.skipif(DEVICE != "cuda", reason="dp4a inline PTX needs a CUDA GPU")
@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q8_0", "Q5_1"])
def test_dp4a_equals_its_twin(qtype):
    raw, w, x = _case(qtype, 3, 48, 1024, torch.float16, seed=9)
    assert torch.equal(qgemv_i8(x, w, asm=True), qgemv_i8(x, w, asm=False))


@pytest.mark.parametrize("qtype", QTYPE_NAMES)
def test_gemv_i8_many_rows_config(qtype, monkeypatch):
    """Q4_K / Q5_K weights with many rows per SM, and any with many short rows, take BN=2 / NC=16 /
    1 warp (gemv_i8_config), the others keep their tile; shown here on N = 40 with the thresholds at
    8 rows per "SM" (the interpreter counts 4): short rows (512), long ones (1280), a masked tail."""
    from rocmforge.kernels import quant_gemv_i8

    monkeypatch.setattr(quant_gemv_i8, "BIG_ROWS_PER_SM", 8)
    monkeypatch.setattr(quant_gemv_i8, "SHORT_ROWS_PER_SM", 8)
    two_rows = dict(BN=2, NC=16, num_warps=1, num_stages=1)
    one_row = quant_gemv_i8.gemv_i8_config(None, qtype, 1, 0.0)
    assert quant_gemv_i8.gemv_i8_config(None, qtype, 1, 40 / 4, 512) == two_rows
    long_rows = quant_gemv_i8.gemv_i8_config(None, qtype, 1, 40 / 4, 1280)
    assert long_rows == (two_rows if qtype in ("Q4_K", "Q5_K") else one_row)
    for n, k in ((40, 512), (37, 1280)):
        raw, w, x = _case(qtype, 1, n, k, torch.bfloat16, seed=n)
        _check(qgemv_i8(x, w), x, raw, qtype, n)
