"""The packed CPU weights (load_model(weights="packed")) against the exact float32 path.

Layer checks use random GGUF blocks: the int4 decomposition of every packable type must rebuild the
reference dequant (gguf/dequant.py) exactly in float32 arithmetic, and the kernel must compute that
weight's product up to the bfloat16 roundings the packed layers declare (x, scales, zeros, y: 2^-9
relative each). Model checks use SmolLM2 (Q4_1 projections, Q8_0 tied head): greedy continuations
must equal the exact path's wherever the exact top-1/top-2 margin is >= 0.5 (the rule under which
the packed path may be the CPU default), and the logits stay within a bound measured with margin.
"""

from __future__ import annotations

import pytest
import torch

from rocmforge.gguf.dequant import dequantize
from rocmforge.kernels.quant_layouts import random_blocks
from rocmforge.layers.linear import INT4_PLANES, BF16Linear, Int4Linear, Linear, int4_parts

GREEDY_PROMPTS = [  # prompts whose exact continuations stay confident for many steps
    "The capital of France is",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
]
GREEDY_STEPS, MARGIN = 24, 0.5
# Measured on SmolLM2 over these steps: max |packed - exact| logit 0.48 (logits reach ~35), mean
# 0.09 (a whole-prompt forward reaches 1.0). A wrong layout or scale gives errors of 10 and more.
LOGIT_MAX_DIFF, LOGIT_MEAN_DIFF = 1.0, 0.15


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


@pytest.mark.parametrize("qtype", list(INT4_PLANES))
def test_int4_parts_rebuild_the_dequant(qtype):
    n, k = 48, 512  # n: the kernel packs rows in 16s
    raw = random_blocks(qtype, n, k, torch.Generator().manual_seed(3))
    want = dequantize(raw.numpy().reshape(-1), qtype, (n, k))  # (n, k) float32, bit-exact vs gguf-py
    codes, scale, zero = int4_parts(raw, qtype, n, k)
    planes = INT4_PLANES[qtype]
    assert codes.shape == (n, planes * k) and int(codes.min()) >= 0 and int(codes.max()) <= 15
    w = ((codes.float() - 8).view(n, -1, 32) * scale[..., None] + zero[..., None]).view(n, planes, k).sum(1)
    # float32: (c - 8) s and the fp16-derived zeros are exact, so only the final sums round (1 ulp)
    torch.testing.assert_close(w, want, rtol=2**-22, atol=2**-22 * float(want.abs().max()))


@pytest.mark.parametrize("qtype", ["Q4_1", "Q4_K", "Q8_0", "Q5_0"])
@pytest.mark.parametrize("rows", [1, 5])
def test_int4_linear_is_the_bf16_rounded_product(qtype, rows):
    n, k = 32, 256
    g = torch.Generator().manual_seed(rows)
    raw = random_blocks(qtype, n, k, g)
    codes, scale, zero = int4_parts(raw, qtype, n, k)
    bias = torch.randn(n, generator=g)
    lin = Int4Linear(codes, scale, zero, bias, planes=INT4_PLANES[qtype])
    x = torch.randn(rows, k, generator=g)
    # the kernel's operands rounded as it rounds them, then an fp32 product
    w = (codes.float() - 8).view(n, -1, 32) * _bf16(scale)[..., None] + _bf16(zero)[..., None]
    w = w.view(n, -1, k)  # (n, planes, k)
    ref = _bf16(x) @ w.sum(1).t()  # (rows, n)
    mag = _bf16(x).abs() @ w.abs().sum(1).t()  # scale of the sum's own rounding
    y = lin(x)
    assert y.dtype == torch.float32 and y.shape == (rows, n)
    assert ((y - bias - ref).abs() <= 2**-8 * ref.abs() + 2**-12 * mag + 1e-6).all()
    want = dequantize(raw.numpy().reshape(-1), qtype, (n, k))
    dw = lin.dense_weight()  # what the kernel multiplies by, vs the exact weight: bf16 scale rounding
    assert (dw - want).abs().max() <= 2**-7 * (want.abs().max() + zero.abs().max())


def test_bf16_linear():
    g = torch.Generator().manual_seed(0)
    w, b, x = torch.randn(24, 64, generator=g), torch.randn(24, generator=g), torch.randn(3, 64, generator=g)
    y = BF16Linear(w, b)(x)
    prod = _bf16(x) @ _bf16(w).t()  # (3, 24): the product of the rounded operands, before y's rounding
    assert ((y - (prod + b)).abs() <= 2**-8 * prod.abs() + 1e-5).all()


def test_refined_head_breaks_bf16_ties_with_exact_logits():
    from rocmforge.models.packing import RefinedHead

    g = torch.Generator().manual_seed(1)
    table = torch.randn(512, 64, generator=g)
    table[7] = table[3] * 1.0001  # row 7 beats row 3 by 0.01%: equal after bfloat16 rounding
    x = table[3:4] * 0.4  # (1, 64): logit of row 3 about 0.4 * 64 ~ 25
    exact = x @ table.t()  # (1, 512)
    head = RefinedHead(BF16Linear(table), table)
    assert int(head.packed(x).argmax()) != 7  # the bf16 head ties them and takes the lower id
    out = head(x)
    assert int(out.argmax()) == int(exact.argmax()) == 7
    idx = out.topk(RefinedHead.TOP_K).indices
    torch.testing.assert_close(out[0, idx[0]], exact[0, idx[0]], rtol=1e-6, atol=1e-5)


@pytest.fixture(scope="module")
def packed(smollm2):
    from rocmforge.models import load_model

    return load_model(smollm2.file, smollm2.config, weights="packed")


def test_packed_model_layout(smollm2, packed):
    assert not [n for n, m in packed.named_modules() if type(m) is Linear], "an exact Linear is left"
    layer = packed.blk[0]
    assert isinstance(layer.attn_qkv, Int4Linear) and isinstance(layer.ffn_gate_up, Int4Linear)
    assert not hasattr(layer, "attn_q") and not hasattr(layer, "ffn_up")  # fused away
    head = packed.output.packed  # the Q8_0 tied head: two planes, refined from the float32 table
    assert isinstance(head, Int4Linear) and head.planes == 2
    assert packed.output.table.data_ptr() == packed.token_embd.weight.data_ptr()  # shared, not copied
    c = smollm2.config
    assert layer.attn_qkv.out_features == (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
    # per decode step: projections + head bytes vs the exact path's float32 weights
    nbytes = sum(b.numel() * b.element_size() for n, b in packed.named_buffers() if "packed" in n or
                 "scale_zero" in n)  # fmt: skip
    exact = sum(p.numel() * 4 for n, p in smollm2.model.named_parameters() if "norm" not in n)
    assert nbytes < exact / 5, (nbytes, exact)
    # the exact model is untouched: plain Linears with their (out, in) weight
    assert type(smollm2.model.blk[0].attn_q) is Linear and smollm2.model.blk[0].attn_qkv is None


def test_packed_rejects_the_gpu(smollm2):
    from rocmforge.models import load_model

    with pytest.raises(ValueError, match="not the CPU"):
        load_model(smollm2.file, smollm2.config, device="meta", weights="packed")
    with pytest.raises(ValueError, match="'exact' or 'packed'"):
        load_model(smollm2.file, smollm2.config, weights="int4")


def test_packed_greedy_equals_exact_where_confident(smollm2, packed, make_session):
    from rocmforge.gguf.tokenizer import GGUFTokenizer

    tok = GGUFTokenizer.from_metadata(smollm2.file.metadata)
    compared, worst, total, count = 0, 0.0, 0.0, 0
    for sid, prompt in enumerate(GREEDY_PROMPTS):
        ids = tok.encode(prompt)
        ref_tokens, ref_steps = make_session(smollm2.model, smollm2.config).greedy(sid, ids, GREEDY_STEPS)
        got_tokens, got_steps = make_session(packed, smollm2.config).greedy(sid, ids, GREEDY_STEPS)
        n = 0
        for step, (ref, got) in enumerate(zip(ref_steps, got_steps)):
            top2 = ref.topk(2).values
            margin = float(top2[0] - top2[1])
            if got_tokens[step] != ref_tokens[step]:  # contexts differ after this: stop comparing
                assert margin < MARGIN, f"prompt {sid} step {step}: packed differs at margin {margin:.2f}"
                break
            d = (got - ref).abs()
            worst, total, count = max(worst, float(d.max())), total + float(d.sum()), count + d.numel()
            n += 1
        compared += n
        print(f"prompt {sid}: {n} of {GREEDY_STEPS} greedy steps equal to the exact path")
    print(f"packed vs exact logits: max |diff| {worst:.3f}, mean {total / count:.4f}")
    assert compared >= 2 * GREEDY_STEPS, f"only {compared} steps compared"
    assert worst <= LOGIT_MAX_DIFF and total / count <= LOGIT_MEAN_DIFF
