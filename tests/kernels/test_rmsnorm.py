"""RMSNorm: twin vs float64 formula and HF (Llama / Gemma3 norms); kernel vs twin. The kernel and twin
both compute in fp32 and round once, so they differ by at most an ulp of the output dtype (plus fp32
summation order)."""

import pytest
import torch

from rocmforge.kernels.reference_ops import rms_norm_ref
from rocmforge.kernels.rmsnorm import rms_norm

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def test_twin_matches_float64_and_hf():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.randn(4, 96, dtype=torch.float64)
    w = torch.randn(96, dtype=torch.float64)
    direct = x / torch.sqrt((x * x).sum(-1, keepdim=True) / 96 + 1e-5) * w
    torch.testing.assert_close(rms_norm_ref(x, w, 1e-5), direct, rtol=1e-12, atol=1e-12)
    xf, wf = x.float(), w.float()
    hf = LlamaRMSNorm(96, eps=1e-5)
    hf.weight.data = wf.clone()
    torch.testing.assert_close(rms_norm_ref(xf, wf, 1e-5), hf(xf), rtol=1e-5, atol=1e-5)
    gm = Gemma3RMSNorm(96, eps=1e-6)
    gm.weight.data = wf.clone()
    torch.testing.assert_close(rms_norm_ref(xf, wf, 1e-6, add_unit_offset=True), gm(xf), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N", [7, 1000, 4097, 16384, 20000])  # 20000 > MAX_FUSED: the two-pass loop
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_res,unit", [(False, False), (True, True)])
def test_kernel_matches_twin(N, dtype, with_res, unit):
    g = torch.Generator().manual_seed(N)
    x = (torch.randn(3, N, generator=g) * 2).to(dtype).to(DEV)
    w = torch.randn(N, generator=g).to(DEV)
    res = torch.randn(3, N, generator=g).to(dtype).to(DEV) if with_res else None
    out = rms_norm(x, w, 1e-6, residual=res, add_unit_offset=unit)
    ref = rms_norm_ref(x, w, 1e-6, residual=res, add_unit_offset=unit)
    if with_res:
        # the residual stream x + r: one fp32 add, one rounding (toward zero in the interpreter for bf16)
        torch.testing.assert_close(out[1].float(), ref[1].float(), rtol=TOL[dtype], atol=0)
        out, ref = out[0], ref[0]
    assert out.dtype == dtype
    tol = 2 * TOL[dtype] if with_res else TOL[dtype]  # y inherits h's rounding: two ulps
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)


def test_strided_rows():
    x = torch.randn(4, 256, device=DEV)[:, :200]  # row stride 256
    w = torch.rand(200, device=DEV)
    torch.testing.assert_close(rms_norm(x, w, 1e-6), rms_norm_ref(x, w, 1e-6), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("N", [64, 96, 4096])  # 96: a power-of-two tile with a masked last group
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_res", [False, True])
def test_quantize_writes_quantize_act_of_the_output(N, dtype, with_res):
    """quantize=True: y (and h) bit-identical to the plain kernel, and the attached int8 form
    bit-identical to the torch twin of quantize_act applied to y as stored."""
    from rocmforge.kernels.quantize_act import attached
    from rocmforge.kernels.reference_quant import quantize_act_ref

    g = torch.Generator().manual_seed(N + with_res)
    x = (torch.randn(3, N, generator=g) * 3).to(dtype).to(DEV)
    x[1, :32] = 0  # an all-zero group
    w = torch.randn(N, generator=g).to(DEV)
    res = torch.randn(3, N, generator=g).to(dtype).to(DEV) if with_res else None
    plain = rms_norm(x, w, 1e-6, residual=res)
    got = rms_norm(x, w, 1e-6, residual=res, quantize=True)
    if with_res:
        assert torch.equal(got[1], plain[1])
        got, plain = got[0], plain[0]
    assert torch.equal(got, plain) and attached(plain) is None
    for name, a, b in zip(("xq", "xd", "xs"), attached(got), quantize_act_ref(got.cpu())):
        assert torch.equal(a.cpu(), b), name
    with pytest.raises(ValueError, match="quantize"):
        rms_norm(x[:, :N - 16], w[:N - 16], 1e-6, quantize=True)  # rows not a multiple of 32
