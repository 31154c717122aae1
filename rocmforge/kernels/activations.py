"""Gated activations of the MLP: act(gate) * up.

    silu_and_mul:       y = gate * sigmoid(gate) * up
    gelu_tanh_and_mul:  y = gate/2 (1 + tanh(sqrt(2/pi) (gate + 0.044715 gate^3))) * up   (Gemma's GeGLU)

gate and up are the two halves of one (T, 2N) projection (gate = x[:, :N], up = x[:, N:]) or two
separate (T, N) tensors. fp32 math, output in the input dtype. A streaming kernel: 3 N elements of
traffic per row, one program per (row, BLOCK columns).

`quantize=True` (N % 32 == 0) also writes quantize_act(y) and attaches it to y, as rmsnorm does, for
the down projection's integer-dot GEMV. NOTE: launched without FMA contraction (the quantizer's
rounding needs it), whether it quantizes or not.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch, current_arch
from rocmforge.kernels.quantize_act import XGROUP, attach, empty_quantized, store_groups


@triton.jit
def _gated_act_kernel(
    g_ptr, u_ptr, y_ptr, xq_ptr, xd_ptr, xs_ptr, stride_g, stride_u, stride_y,
    N: tl.constexpr, BLOCK: tl.constexpr, GELU: tl.constexpr, QUANT: tl.constexpr, DIV_RN: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    g = tl.load(g_ptr + row * stride_g + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * stride_u + offs, mask=mask, other=0.0).to(tl.float32)
    if GELU:
        z = 0.7978845608028654 * (g + 0.044715 * g * g * g)
        # tanh(z) = 1 - 2 / (exp(2z) + 1): exact limits at +-inf, no libdevice call
        act = 0.5 * g * (2.0 - 2.0 / (tl.exp(2.0 * z) + 1.0))
    else:
        act = g / (1.0 + tl.exp(-g))
    y = (act * u).to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + row * stride_y + offs, y, mask=mask)
    if QUANT:  # y as stored -> int8 groups of 32 (BLOCK is a multiple of 32, N too)
        G: tl.constexpr = BLOCK // 32
        offs_g = tl.program_id(1) * G + tl.arange(0, G)
        store_groups(tl.reshape(y.to(tl.float32), (G, 32)), offs_g, N, row, xq_ptr, xd_ptr, xs_ptr, DIV_RN)


def act_config(arch: Arch, n: int) -> dict:
    """1024-column blocks: 8 elements (16 B of bf16) per thread with 4 warps of 32 (2 of 64)."""
    block = min(1024, triton.next_power_of_2(n))
    return dict(BLOCK=block, num_warps=max(1, min(4, block // (8 * arch.warp_size))))


def _gated(x, up, gelu: bool, quantize: bool):
    if up is None:
        T, two_n = x.shape
        assert two_n % 2 == 0, f"fused gate_up width {two_n} is odd"
        N = two_n // 2
        gate, up = x[:, :N], x[:, N:]
    else:
        gate = x
        T, N = gate.shape
        assert up.shape == gate.shape and up.dtype == gate.dtype, (
            f"gate {tuple(gate.shape)} {gate.dtype} vs up {tuple(up.shape)} {up.dtype}")
    assert gate.dtype in (torch.float16, torch.bfloat16, torch.float32), gate.dtype
    assert gate.stride(1) == 1 and up.stride(1) == 1
    y = torch.empty(T, N, dtype=gate.dtype, device=gate.device)
    if quantize and (N % XGROUP or gate.dtype == torch.float32):
        raise ValueError(f"gated activation: quantize needs fp16/bf16 and N % 32 == 0, "
                         f"got N={N} {gate.dtype}")
    xq, xd, xs = empty_quantized(T, N, gate.device) if quantize else (y, y, y)
    if T > 0:
        cfg = act_config(current_arch(gate.device), N)
        _gated_act_kernel[(T, triton.cdiv(N, cfg["BLOCK"]))](
            gate, up, y, xq, xd, xs, gate.stride(0), up.stride(0), y.stride(0),
            N=N, BLOCK=cfg["BLOCK"], GELU=gelu, QUANT=quantize, DIV_RN=gate.device.type != "cpu",
            num_warps=cfg["num_warps"], enable_fp_fusion=False,
        )
    return attach(y, (xq, xd, xs)) if quantize else y


def silu_and_mul(x: torch.Tensor, up: torch.Tensor | None = None, quantize: bool = False) -> torch.Tensor:
    """x (T, 2N) -> silu(x[:, :N]) * x[:, N:] (T, N); or x = gate (T, N) with up (T, N)."""
    return _gated(x, up, gelu=False, quantize=quantize)


def gelu_tanh_and_mul(x: torch.Tensor, up: torch.Tensor | None = None,
                      quantize: bool = False) -> torch.Tensor:
    """x (T, 2N) -> gelu_tanh(x[:, :N]) * x[:, N:] (T, N); or x = gate (T, N) with up (T, N)."""
    return _gated(x, up, gelu=True, quantize=quantize)


def aot_specs(arch: Arch) -> list[dict]:
    """bf16/fp16, both activations, intermediate sizes of the shipped models and 14336; the quantizing
    variant where the integer-dot GEMV runs (CUDA)."""
    from rocmforge.kernels.quant_gemv_i8 import supported

    specs = []
    for dt in ("bf16", "fp16"):
        for n in (1536, 4864, 6912, 8960, 14336):
            for gelu in (False, True):
                for quant in (False, True) if supported(arch) else (False,):
                    cfg = act_config(arch, n)
                    sig = {"g_ptr": f"*{dt}", "u_ptr": f"*{dt}", "y_ptr": f"*{dt}", "xq_ptr": "*i8",
                           "xd_ptr": "*fp32", "xs_ptr": "*fp32", "stride_g": "i32", "stride_u": "i32",
                           "stride_y": "i32"}
                    const = dict(N=n, BLOCK=cfg["BLOCK"], GELU=gelu, QUANT=quant, DIV_RN=True)
                    sig.update({s: "constexpr" for s in const})
                    name = f"{'gelu' if gelu else 'silu'}_and_mul_{dt}_{n}{'_q8' if quant else ''}"
                    specs.append(dict(name=name, fn=_gated_act_kernel, signature=sig, constexprs=const,
                                      num_warps=cfg["num_warps"], num_stages=1))
    return specs
