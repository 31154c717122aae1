"""QuantLinear on real SmolLM2 GGUF weights vs the exact dequantized dense layer.

The reference is F.linear(x, W) with W from rocmforge.gguf.dequantize (bit-exact vs gguf-py) in fp32.
The kernels take fp16 x and accumulate in fp32 (the GEMM rounds decoded weights to fp16 for the tensor
cores; outputs are rounded to fp16): relative error ~2^-11 per product, on outputs of size ~1-10 over
K = 576..1536 terms -> tolerance 2e-2 absolute + 1e-2 relative. Runs under TRITON_INTERPRET on CPU.
"""

import os

import pytest
import torch
from torch import nn

from rocmforge.layers.linear import Linear
from rocmforge.layers.quant_linear import QuantLinear, quantize_linears


@pytest.fixture(scope="module")
def gguf_file(smollm2_path):
    from rocmforge.gguf.reader import GGUFFile

    return GGUFFile(smollm2_path)


@pytest.fixture
def dev() -> str:
    """Where the quant kernels run: the GPU, or the CPU under the interpreter (else a skip)."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the quant kernels need a GPU or TRITON_INTERPRET=1")
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_k = Linear(576, 192)  # Q4_1 in the file
        self.ffn_down = Linear(1536, 576)  # Q4_1


class _Tiny(nn.Module):  # module paths = GGUF tensor names, like the real models
    def __init__(self):
        super().__init__()
        self.blk = nn.ModuleList([_Block()])


def test_swaps_and_matches_dense(gguf_file, dev):
    model = _Tiny().to(dev)
    swapped = quantize_linears(model, gguf_file, dtype=torch.float16)
    assert swapped == {"Q4_1": 2}
    g = torch.Generator().manual_seed(0)
    for name, k in (("attn_k", 576), ("ffn_down", 1536)):
        layer = getattr(model.blk[0], name)
        assert isinstance(layer, QuantLinear)
        w = gguf_file.load(f"blk.0.{name}.weight").to(dev)  # (out, in) exact fp32
        assert torch.equal(layer.dense_weight(), w)  # the load-time split loses nothing
        for rows in (1, 12, 20):  # GEMV, tensor-core GEMM, dequant + matmul
            x = torch.randn(rows, k, generator=g).to(dev, torch.float16)
            ref = x.float() @ w.T
            torch.testing.assert_close(layer(x).float(), ref, atol=2e-2, rtol=1e-2)


class _AttnBlock(nn.Module):  # the DecoderLayer attributes FUSIONS names
    def __init__(self):
        super().__init__()
        self.attn_q, self.attn_k, self.attn_v = Linear(576, 576), Linear(576, 192), Linear(576, 192)
        self.ffn_gate, self.ffn_up = Linear(576, 1536), Linear(576, 1536)
        self.attn_qkv = self.ffn_gate_up = None


class _TinyFused(nn.Module):
    def __init__(self):
        super().__init__()
        self.blk = nn.ModuleList([_AttnBlock()])


def test_fuses_qkv_and_gate_up_exactly(gguf_file, dev):
    """q/k/v (and gate/up) of one quant type become one QuantLinear over the stacked GGUF rows: its
    dequantized weight is the exact concatenation, the parts are dropped."""
    model = _TinyFused().to(dev)
    swapped = quantize_linears(model, gguf_file, dtype=torch.float16)
    assert swapped == {"Q4_1": 5}
    blk = model.blk[0]
    assert blk.attn_q is None and blk.ffn_up is None
    for fused, parts in (("attn_qkv", ("attn_q", "attn_k", "attn_v")),
                         ("ffn_gate_up", ("ffn_gate", "ffn_up"))):
        layer = getattr(blk, fused)
        w = torch.cat([gguf_file.load(f"blk.0.{p}.weight") for p in parts]).to(dev)
        assert isinstance(layer, QuantLinear) and torch.equal(layer.dense_weight(), w)
        x = torch.randn(2, 576, generator=torch.Generator().manual_seed(1)).to(dev, torch.float16)
        torch.testing.assert_close(layer(x).float(), x.float() @ w.T, atol=2e-2, rtol=1e-2)
