"""Gated activations: kernel vs twin, twin vs a direct float64 formula.

Both compute in fp32 and round once, so 16-bit outputs differ by at most one ulp (2^-7 bf16 relative;
the interpreter rounds fp32 -> bf16 toward zero, hardware to nearest). In fp32 the kernel's tanh is
1 - 2 / (exp(2z) + 1), absolute error ~1e-7, times |gate * up| <= ~100 here: atol 2e-5."""

import math

import pytest
import torch

from rocmforge.kernels.activations import gelu_tanh_and_mul, silu_and_mul
from rocmforge.kernels.reference_ops import gelu_tanh_and_mul_ref, silu_and_mul_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def _silu64(g, u):
    return g / (1 + torch.exp(-g)) * u


def _gelu64(g, u):
    return 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))) * u


@pytest.mark.parametrize("twin,direct", [(silu_and_mul_ref, _silu64), (gelu_tanh_and_mul_ref, _gelu64)])
def test_twins_match_float64(twin, direct):
    x = torch.randn(6, 2 * 37, dtype=torch.float64) * 4
    torch.testing.assert_close(twin(x), direct(x[:, :37], x[:, 37:]), rtol=1e-12, atol=1e-12)


PAIRS = [(silu_and_mul, silu_and_mul_ref), (gelu_tanh_and_mul, gelu_tanh_and_mul_ref)]


@pytest.mark.parametrize("fn,ref", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,N", [(1, 7), (5, 1000), (3, 2500)])
def test_kernel_matches_twin(fn, ref, dtype, T, N):
    x = (torch.randn(T, 2 * N, device=DEV) * 3).to(dtype)
    out = fn(x)
    assert out.shape == (T, N) and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref(x).float(), rtol=TOL[dtype], atol=TOL[dtype])
    g, u = x[:, :N].contiguous(), x[:, N:].contiguous()
    torch.testing.assert_close(fn(g, u), out, rtol=0, atol=0)


def test_extreme_inputs_stay_finite():
    x = torch.tensor([[-100.0, 100.0, -30.0, 1.0, 1.0, 1.0]], device=DEV)
    for fn, ref in ((silu_and_mul, silu_and_mul_ref), (gelu_tanh_and_mul, gelu_tanh_and_mul_ref)):
        torch.testing.assert_close(fn(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [silu_and_mul, gelu_tanh_and_mul])
@pytest.mark.parametrize("T,N", [(1, 96), (3, 2080)])  # 2080: the last 1024-block holds 1 group
def test_quantize_writes_quantize_act_of_the_output(fn, T, N):
    """quantize=True: y bit-identical to the plain kernel, the attached int8 form bit-identical to the
    torch twin of quantize_act applied to y as stored."""
    from rocmforge.kernels.quantize_act import attached
    from rocmforge.kernels.reference_quant import quantize_act_ref

    x = (torch.randn(T, 2 * N, generator=torch.Generator().manual_seed(N)) * 3).to(torch.bfloat16).to(DEV)
    plain, got = fn(x), fn(x, quantize=True)
    assert torch.equal(got, plain) and attached(plain) is None
    for name, a, b in zip(("xq", "xd", "xs"), attached(got), quantize_act_ref(got.cpu())):
        assert torch.equal(a.cpu(), b), name
    with pytest.raises(ValueError, match="quantize"):
        fn(x[:, :2 * N - 32], quantize=True)  # N - 16 columns: not a multiple of 32
