"""Synthetic GGUF files: llama.cpp's quant mix, loading through rocmforge, dequant equal to gguf-py, cache.

References: the tensor-type counts llama.cpp's loader prints for the published Llama-3-8B and
Qwen2.5-7B Q4_K_M and Qwen2.5-0.5B Q8_0 files; the real SmolLM2 GGUF of rocmforge's hub (names,
shapes, types, hyper-parameters); gguf-py's `quants.dequantize` for every quantized tensor.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from rocmforge.bench.specs import SPECS, get_spec, tensor_plan
from rocmforge.bench.synthetic import ensure_synthetic, synthetic_path
from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFFile, dequantize
from rocmforge.gguf.tokenizer import GGUFTokenizer
from rocmforge.models import load_model

# llama.cpp's "llama_model_loader: - type X: N tensors" lines for the published files
PUBLISHED_COUNTS = {
    "llama-3-8b-q4_k_m": {"F32": 65, "Q4_K": 193, "Q6_K": 33},
    "qwen2.5-7b-q4_k_m": {"F32": 141, "Q4_K": 169, "Q6_K": 29},
    "qwen2.5-0.5b-q8_0": {"F32": 121, "Q8_0": 169},
}
CONFIG_FIELDS = ("arch", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_size", "vocab_size",
                 "rope_base", "rms_eps", "context_length", "tied_embeddings", "qkv_bias")  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_quant_mix_matches_published_files(name):
    assert dict(Counter(q for _, _, q in tensor_plan(SPECS[name]))) == PUBLISHED_COUNTS[name]


def test_smollm2_plan_is_the_real_file():
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        real = GGUFFile(resolve_model("smollm2"))
    except ModelNotFoundError as e:
        pytest.skip(f"real SmolLM2 GGUF not available to compare with: {e}")
    want = {n: (tuple(t.shape), t.qtype_name) for n, t in real.tensors.items()}
    assert {n: (tuple(s), q) for n, s, q in tensor_plan(SPECS["smollm2-135m-q4_1"])} == want


def _file_config(path) -> ModelConfig:
    return ModelConfig.from_gguf(GGUFFile(path))


def test_metadata_gives_the_spec_config(smollm2_l2, tiny_kquant, tiny_kquant_spec):
    for path, spec in ((smollm2_l2, get_spec("smollm2-135m-q4_1", 2)), (tiny_kquant, tiny_kquant_spec)):
        c = _file_config(path)
        exact = [k for k in CONFIG_FIELDS if k not in ("rope_base", "rms_eps")] + ["num_layers"]
        assert {k: getattr(c, k) for k in exact} == {k: getattr(spec, k) for k in exact}
        for k in ("rope_base", "rms_eps"):  # stored as float32
            assert getattr(c, k) == pytest.approx(getattr(spec, k), rel=1e-6)


def test_smollm2_config_matches_real_model(smollm2_l2):
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        real = ModelConfig.from_gguf(GGUFFile(resolve_model("smollm2")))
    except ModelNotFoundError as e:
        pytest.skip(f"real SmolLM2 GGUF not available to compare with: {e}")
    ours = dataclasses.replace(_file_config(smollm2_l2), num_layers=real.num_layers,
                               layer_sliding=real.layer_sliding)  # fmt: skip
    assert ours == real


@pytest.mark.parametrize("which", ["smollm2_l2", "tiny_kquant"])
def test_loads_and_dequantizes_like_gguf_py(which, request, tiny_kquant_spec):
    path = request.getfixturevalue(which)
    spec = get_spec("smollm2-135m-q4_1", 2) if which == "smollm2_l2" else tiny_kquant_spec
    f = GGUFFile(path)
    assert {n: (tuple(t.shape), t.qtype_name) for n, t in f.tensors.items()} == {
        n: (tuple(s), q) for n, s, q in tensor_plan(spec)}  # fmt: skip
    seen = set()
    for name, t in f.tensors.items():
        if t.qtype_name == "F32":
            continue
        seen.add(t.qtype_name)
        ours = dequantize(f.raw(name), t.qtype_name, t.shape)  # (rows, cols) float32
        ref = quants.dequantize(f.raw(name).reshape(t.shape[0], -1), GGMLQuantizationType[t.qtype_name])
        assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(ref))), name
        assert torch.isfinite(ours).all() and 0.01 < float(ours.std()) < 0.04, (name, float(ours.std()))
    assert seen == {q for _, _, q in tensor_plan(spec)} - {"F32"}
    cfg = ModelConfig.from_gguf(f)
    model = load_model(f, cfg)  # strict: a missing, extra or mis-shaped tensor raises
    assert model.state_dict()["blk.1.ffn_down.weight"].shape == (spec.hidden_size, spec.ffn_size)


def test_tokenizer_works(smollm2_l2):
    tok = GGUFTokenizer.from_metadata(GGUFFile(smollm2_l2).metadata)
    assert tok.vocab_size == 49152 and tok.bos_id == 0 and tok.eos_id == 1
    ids = tok.encode("the weather, ünïcode 123")
    assert ids[0] == 0 and tok.decode(ids[1:]) == "the weather, ünïcode 123"
    assert tok.encode(" the", add_special=False) == [tok.piece_to_id("Ġthe")]  # three merges
    assert tok.decode([49151]) == f"<filler_{49151 - 2 - 256 - 12}>"


def test_cache_reuses_valid_and_rewrites_bad(synth_dir):
    path = ensure_synthetic("smollm2-135m-q4_1", layers=1, cache_dir=synth_dir)
    assert path == synthetic_path(get_spec("smollm2-135m-q4_1", 1), synth_dir)
    os.utime(path, (1, 1))
    assert ensure_synthetic("smollm2-135m-q4_1", layers=1, cache_dir=synth_dir).stat().st_mtime == 1
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a truncated download / interrupted write
        fh.truncate(size // 2)
    ensure_synthetic("smollm2-135m-q4_1", layers=1, cache_dir=synth_dir)
    assert path.stat().st_size == size and path.stat().st_mtime != 1
    with pytest.raises(ValueError, match="between 1 and 30"):
        get_spec("smollm2-135m-q4_1", 31)
