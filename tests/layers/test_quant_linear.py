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


class _TinyLM(nn.Module):  # just what quantize_embedding reads: token_embd, config, output
    def __init__(self, tied: bool, scale: float | None = None):
        super().__init__()
        from types import SimpleNamespace

        from rocmforge.layers.embedding import Embedding

        self.config = SimpleNamespace(tied_embeddings=tied)
        self.token_embd = Embedding(49152, 576, scale=scale)  # Q8_0 in the file
        if not tied:
            self.output = Linear(576, 49152)  # no such tensor in the (tied) file: stays dense


@pytest.mark.parametrize("scale", [None, 24.0])
def test_untied_embedding_stays_quantized_and_looks_up_exact_rows(gguf_file, dev, scale):
    """The lookup dequantizes only the ids' rows: each equals the exact fp32 row (gguf dequant,
    bit-exact vs gguf-py) rounded to fp16, then scaled like Embedding; the dense table is gone."""
    from rocmforge.layers.quant_embedding import QuantEmbedding

    model = _TinyLM(tied=False, scale=scale).to(dev)
    assert quantize_linears(model, gguf_file, dtype=torch.float16) == {"Q8_0": 1}
    assert isinstance(model.token_embd, QuantEmbedding) and "token_embd.weight" not in model.state_dict()
    table = gguf_file.load("token_embd.weight")  # (vocab, 576) exact fp32
    ids = torch.tensor([0, 49151, 7, 7, 31000, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13])  # repeats, > one tile
    ref = table[ids].to(torch.float16)
    ref = ref * scale if scale is not None else ref
    out = model.token_embd(ids.to(dev)).cpu()
    assert out.dtype == torch.float16 and torch.equal(out, ref)
    assert model.token_embd(torch.zeros(0, dtype=torch.int64, device=dev)).shape == (0, 576)


def test_tied_embedding_stays_dense(gguf_file, dev):
    model = _TinyLM(tied=True).to(dev)
    assert quantize_linears(model, gguf_file, dtype=torch.float16) == {}
    assert "token_embd.weight" in model.state_dict()  # it is the head too: cuBLAS reads it as is


def test_q_and_k_fuse_when_v_differs_and_the_layer_agrees(dev):
    """Q4_K_M gives some layers a Q6_K attn_v: q and k (one type) still run as one QuantLinear
    (attn_qk), v apart. The fused weight is the exact stack of q's and k's rows, and the layer's
    attention output matches the same layer holding those weights dense."""
    from types import SimpleNamespace

    from rocmforge.attention import build_metadata
    from rocmforge.cache.kv_cache import allocate_kv_cache
    from rocmforge.kernels.quant_layouts import random_blocks
    from rocmforge.kernels.reference_quant import dequantize_ref
    from tests.attention.test_triton_backend_model import tiny_models

    cfg, models = tiny_models("llama", torch.float16)  # hidden 64, 4 q heads / 1 kv head of 16
    g = torch.Generator().manual_seed(3)
    # NOTE: 5-bit types at 6 rows take dequant + matmul on CUDA (choose_path), whose error is the fp16
    # rounding the tolerance is for; the integer-dot GEMV would add x's int8 rounding (on the H200 with
    # Q8_0 / Q4_0 at 5 rows: 0.075 off)
    types = {"attn_q": "Q5_0", "attn_k": "Q5_0", "attn_v": "Q5_1"}
    raws = {n: random_blocks(qt, cfg.hidden_size if n == "attn_q" else 16, cfg.hidden_size, g)
            for n, qt in types.items()}  # fmt: skip
    tensors = {f"blk.0.{n}.weight": SimpleNamespace(name=f"blk.0.{n}.weight", qtype_name=qt,
                                                    shape=(raws[n].shape[0], cfg.hidden_size))
               for n, qt in types.items()}  # fmt: skip
    fake = SimpleNamespace(tensors=tensors, raw=lambda name: raws[name.split(".")[2]].numpy())
    dense, quant = models["torch"].to(dev), models["triton"].to(dev)
    for n, qt in types.items():  # the dense twin holds the exact weights of the blocks
        w = dequantize_ref(raws[n], qt, (raws[n].shape[0], cfg.hidden_size))  # exact fp32
        getattr(dense.blk[0], n).weight.copy_(w)  # rounded to fp16: within the tolerance below
    quant.load_state_dict(dense.state_dict())
    assert quantize_linears(quant, fake, dtype=torch.float16) == {"Q5_0": 2, "Q5_1": 1}
    blk = quant.blk[0]
    assert blk.attn_qkv is None and blk.attn_q is None and isinstance(blk.attn_qk, QuantLinear)
    # what reads each norm's output, for its int8 form (mark_int8_inputs): the FFN stayed dense here
    assert blk.attn_norm.int8_for == {"Q5_0", "Q5_1"} and not blk.ffn_norm.int8_for and not blk.act_int8_for
    qk = torch.cat([dequantize_ref(raws[n], "Q5_0", (raws[n].shape[0], cfg.hidden_size))
                    for n in ("attn_q", "attn_k")])
    assert torch.equal(blk.attn_qk.dense_weight().cpu(), qk)
    x = torch.randn(6, cfg.hidden_size, generator=g).to(dev, torch.float16)
    outs = []
    for model in (dense, quant):
        kv = allocate_kv_cache(cfg, 4, 4, device=dev, dtype=torch.float16)
        meta = build_metadata([6], [0], [[2, 0]], 4, kv, dev)
        pos = torch.arange(6, device=dev)
        rope = model.rope["global"]
        with torch.inference_mode():
            outs.append(model.blk[0].attention(x, rope, rope.prepare(pos, None, 6), meta).float())
    assert outs[0].abs().max() > 0.1  # not a vacuous comparison
    torch.testing.assert_close(outs[1], outs[0], atol=2e-2, rtol=1e-2)  # fp16 x and outputs


def test_takes_the_int8_form_attached_to_its_input(dev, monkeypatch):
    """An x whose norm attached quantize_act(x) (rms_norm quantize) skips the quantize launch: the
    integer-dot GEMV reads the attached form. Shown with a form that is not x's own (of 2x)."""
    from rocmforge.kernels import quant_matmul as qm
    from rocmforge.kernels.quant_gemv_i8 import qgemv_i8
    from rocmforge.kernels.quant_layouts import random_blocks, split_planes
    from rocmforge.kernels.quantize_act import attach, quantize_act

    monkeypatch.setattr(qm, "choose_path", lambda m, arch, qtype="": "gemv_i8")  # CUDA's choice at M <= 8
    g = torch.Generator().manual_seed(5)
    w = split_planes(random_blocks("Q4_K", 32, 256, g).to(dev), "Q4_K", 32, 256)
    lin = QuantLinear(w, None, torch.float16)
    x = torch.randn(2, 256, generator=g).to(dev, torch.float16)
    assert torch.equal(lin(x), qgemv_i8(x, w))
    assert torch.equal(lin(attach(x.clone(), quantize_act(x))), lin(x))
    assert torch.equal(lin(attach(x.clone(), quantize_act(2 * x))), qgemv_i8(2 * x, w))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="only the CUDA integer-dot GEMV takes it")
def test_norm_quantizes_exactly_when_a_reader_takes_the_int8_gemv():
    """choose_path on the H200: Q4_K and Q8_0 take the integer-dot GEMV at 1..8 rows, Q5_0 at 1..4
    (dequant + cuBLAS above); a norm nothing quantized reads never quantizes."""
    from rocmforge.kernels.quantize_act import attached, quantize_act
    from rocmforge.layers.norm import RMSNorm

    norm = RMSNorm(256, 1e-6).cuda()
    norm.weight.data.normal_()
    cases = {frozenset(): {1: False, 4: False}, frozenset({"Q4_K"}): {1: True, 8: True, 9: False},
             frozenset({"Q8_0"}): {1: True, 8: True, 9: False}, frozenset({"Q5_0"}): {4: True, 5: False}}
    for readers, by_rows in cases.items():
        norm.int8_for = readers
        for t, want in by_rows.items():
            x = torch.randn(t, 256, device="cuda", dtype=torch.bfloat16)
            for y in (norm(x), norm.add(x, torch.randn_like(x))[0]):
                assert (attached(y) is not None) == want, (readers, t)
                if want:
                    assert all(torch.equal(a, b) for a, b in zip(attached(y), quantize_act(y)))
