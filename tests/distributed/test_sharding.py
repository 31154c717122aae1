"""The sharding helpers in one process: slices of weights and of GGUF blocks reproduce the whole.

References are independent of rocmforge.distributed: the unsplit model from models.load_model and
the whole tensor from gguf.dequantize. Each rank's shard is run with a one-process group (its
all_reduce and gather are identities), so a rank's layer returns its *partial* result, and

    sum over ranks of the partial attention / FFN / embedding  == the unsplit layer's output
    concat over ranks of the logits of each vocab slice        == the unsplit head's logits

Tolerance: a row-parallel sum adds two fp32 partial dot products where the unsplit layer makes one,
so results differ by fp32 rounding of sums of ~600-1500 terms (relative ~1e-6): atol 1e-4 on
outputs of magnitude ~1-10. The embedding is exact (one rank adds zeros). Quant slices are bit-exact.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from rocmforge.attention import build_metadata
from rocmforge.cache.kv_cache import allocate_kv_cache
from rocmforge.distributed.parallel_state import TPGroup
from rocmforge.distributed.partition import TPPlan
from rocmforge.distributed.quant_split import QuantSplitError, slice_cols, slice_rows
from rocmforge.distributed.tp import ffn_align, load_sharded, shard_model
from rocmforge.gguf import GGUFFile, dequantize


def _path(name: str):
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return resolve_model(name)
    except ModelNotFoundError as e:
        pytest.skip(f"real model {name!r} is not available: {e}")


def test_column_and_row_splits_reproduce_the_matmul():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 96, generator=g), torch.randn(40, 96, generator=g)  # (T, in), (out, in)
    full = x @ w.T  # (T, out)
    cols = torch.cat([x @ w[a:b].T for a, b in ((0, 17), (17, 40))], dim=1)  # column-parallel: out rows
    rows = sum(x[:, a:b] @ w[:, a:b].T for a, b in ((0, 32), (32, 96)))  # row-parallel: in slices summed
    torch.testing.assert_close(cols, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(rows, full, rtol=0, atol=1e-4)


@pytest.mark.parametrize("model,name", [
    ("smollm2", "blk.0.attn_q.weight"),  # Q4_1
    ("smollm2", "token_embd.weight"),  # Q8_0
    ("qwen2.5-coder", "blk.0.attn_k.weight"),  # Q5_0
    ("qwen2.5-coder", "blk.0.ffn_down.weight"),  # Q6_K
    ("qwen2.5-coder", "blk.0.ffn_gate.weight"),  # Q4_K / Q5_0 depending on the layer
    ("qwen2.5-coder", "blk.0.attn_k.bias"),  # F32 (1-D: rows only)
])  # fmt: skip
def test_quant_block_slices_dequantize_to_the_slice(model, name):
    f = GGUFFile(_path(model))
    info = f.tensors[name]
    whole = dequantize(f.raw(name), info.qtype, info.shape)  # the independent reference
    if len(info.shape) == 1:
        part = slice_rows(f.raw(name), info.qtype, (info.shape[0], 1), 3, 40)
        assert torch.equal(dequantize(part, info.qtype, (37,)), whole[3:40])
        return
    n, k = info.shape
    r0, r1 = n // 3, n // 3 + 37
    part = slice_rows(f.raw(name), info.qtype, info.shape, r0, r1)
    assert torch.equal(dequantize(part, info.qtype, (r1 - r0, k)), whole[r0:r1])
    bs = 256 if info.qtype_name.endswith("_K") else 32
    c0, c1 = bs, k - bs if k > 2 * bs else k
    part = slice_cols(f.raw(name), info.qtype, info.shape, c0, c1)
    assert torch.equal(dequantize(part, info.qtype, (n, c1 - c0)), whole[:, c0:c1])
    with pytest.raises(QuantSplitError, match="cut through its blocks"):
        slice_cols(f.raw(name), info.qtype, info.shape, bs // 2, k)


@pytest.fixture(scope="module")
def smollm2():
    """(file, config, unsplit model, [rank 0 shard via load_sharded, rank 1 via shard_model], plans)."""
    from rocmforge.config import ModelConfig
    from rocmforge.models import load_model

    f = GGUFFile(_path("smollm2"))
    cfg = ModelConfig.from_gguf(f)
    full = load_model(f, cfg)
    plans = [TPPlan.make(cfg, r, 2, ffn_align=ffn_align(f, cfg)) for r in range(2)]
    one = TPGroup(0, 1, torch.device("cpu"))  # identity collectives: each shard returns its partials
    shards = [load_sharded(f, cfg, plans[0], one), shard_model(copy.deepcopy(full), cfg, plans[1], one)]
    return f, cfg, full, shards, plans


def _meta(config, T: int):
    kv = allocate_kv_cache(config, 4, 16)
    return build_metadata([T], [0], [[2, 0, 3, 1]], 16, kv, "cpu", logits="all")


def test_shards_sum_to_the_unsplit_layers(smollm2):
    f, cfg, full, shards, plans = smollm2
    assert [(s.lm.blk[0].num_heads, s.lm.blk[0].num_kv_heads) for s in shards] == [(6, 2), (3, 1)]
    T, g = 11, torch.Generator().manual_seed(1)
    ids, pos = torch.randint(0, cfg.vocab_size, (T,), generator=g), torch.arange(T)
    with torch.inference_mode():
        emb = [s.lm.token_embd(ids) for s in shards]
        assert torch.equal(emb[0] + emb[1], full.token_embd(ids))  # exactly one rank holds each id
        for i in (0, 17, cfg.num_layers - 1):
            x = torch.randn(T, cfg.hidden_size, generator=g)  # (T, hidden)
            ref_layer = full.blk[i]
            rope = full.rope[ref_layer.rope_key]
            cs = rope.cos_sin(pos)
            want_attn = ref_layer.attention(ref_layer.attn_norm(x), rope, cs, _meta(cfg, T))
            want_ffn = ref_layer.ffn(ref_layer.ffn_norm(x))
            attn = sum(s.lm.blk[i].attention(s.lm.blk[i].attn_norm(x), rope, cs,
                                             _meta(p.local_config(cfg), T))
                       for s, p in zip(shards, plans))  # fmt: skip
            ffn = sum(s.lm.blk[i].ffn(s.lm.blk[i].ffn_norm(x)) for s in shards)
            torch.testing.assert_close(attn, want_attn, rtol=0, atol=1e-4)
            torch.testing.assert_close(ffn, want_ffn, rtol=0, atol=1e-4)
        h = torch.randn(T, cfg.hidden_size, generator=g)
        linear = torch.nn.functional.linear
        want = linear(full.output_norm(h), full.head_weight())  # (T, V)
        got = torch.cat([linear(s.lm.output_norm(h), s.lm.head_weight()) for s in shards], dim=1)  # (T, V)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_quantize_sharded_keeps_the_slices_blocks(smollm2):
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("QuantLinear's kernels need a GPU or TRITON_INTERPRET=1")
    from rocmforge.distributed.tp import quantize_sharded

    f, _, _, shards, plans = smollm2
    tp = copy.deepcopy(shards[1])
    want = {n: tp.lm.get_submodule(n).weight.clone() for n in ("blk.0.attn_q", "blk.0.ffn_down.inner")}
    assert quantize_sharded(tp, f, plans[1], dtype=torch.float16) == {"Q4_1": 7 * 30}
    for name, w in want.items():  # column-parallel rows and row-parallel whole blocks, bit-exact
        assert torch.equal(tp.lm.get_submodule(name).dense_weight(), w)
