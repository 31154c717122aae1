"""ModelConfig.from_gguf on the real files (values from shared/MODELS.md) and on crafted bad files.

The crafted files are tiny llama models written with gguf.GGUFWriter; loading them checks the
strict name match (a missing or unexpected tensor is a GGUFError naming it).
"""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest
import torch

from rocmforge.config import ModelConfig, RopeScaling
from rocmforge.gguf import GGUFError, GGUFFile
from rocmforge.layers.rotary import rope_inv_freq
from rocmforge.models import load_model

# name -> expected fields, transcribed from ../shared/MODELS.md (and llama.cpp's Gemma 3 defaults)
EXPECTED = {
    "smollm2": dict(arch="llama", num_layers=30, hidden_size=576, num_heads=9, num_kv_heads=3, head_dim=64,
                    ffn_size=1536, rope_base=100000.0, rope_local_base=None, sliding_window=None,
                    tied_embeddings=True, rope_neox=False, embed_scale=None),
    "gemma3": dict(arch="gemma3", num_layers=18, hidden_size=640, num_heads=4, num_kv_heads=1, head_dim=256,
                   ffn_size=2048, rope_base=1e6, rope_local_base=1e4, sliding_window=512,
                   tied_embeddings=True, rope_neox=True, embed_scale=math.sqrt(640)),
    "qwen2.5-coder": dict(arch="qwen2", num_layers=24, hidden_size=896, num_heads=14, num_kv_heads=2,
                          head_dim=64, ffn_size=4864, rope_base=1e6, rope_local_base=None,
                          sliding_window=None, tied_embeddings=False, rope_neox=True, embed_scale=None),
}  # fmt: skip


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_model_config(name, model_store):
    cfg = ModelConfig.from_gguf(GGUFFile(model_store.path(name)))
    for field, want in EXPECTED[name].items():
        assert getattr(cfg, field) == pytest.approx(want), field
    if name == "gemma3":  # 5 sliding-window layers, then 1 global, repeated
        assert cfg.layer_sliding == tuple(i % 6 != 5 for i in range(18))
        assert [cfg.layer_rope_base(i) for i in (0, 4, 5, 11, 17)] == [1e4, 1e4, 1e6, 1e6, 1e6]
    else:
        assert not any(cfg.layer_sliding) and cfg.layer_window(0) is None
    assert cfg.attn_scale == pytest.approx(cfg.head_dim**-0.5)


# ---- crafted files --------------------------------------------------------------------------------

HP = {"context_length": 64, "embedding_length": 8, "block_count": 1, "feed_forward_length": 16,
      "attention.head_count": 2, "attention.head_count_kv": 1, "vocab_size": 32}  # fmt: skip


def _tensors(tied: bool = True) -> dict[str, tuple[int, ...]]:  # torch-order shapes of a 1-layer model
    t = {"token_embd.weight": (32, 8), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
         "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (4, 8), "blk.0.attn_v.weight": (4, 8),
         "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_norm.weight": (8,), "blk.0.ffn_gate.weight": (16, 8),
         "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}  # fmt: skip
    if not tied:
        t["output.weight"] = (32, 8)
    return t


def write_tiny(path, *, arch="llama", drop_key=None, extra_md=None, tensors=None) -> GGUFFile:
    w = gguf.GGUFWriter(str(path), arch)
    md = {f"{arch}.{k}": v for k, v in HP.items()}
    md[f"{arch}.attention.layer_norm_rms_epsilon"] = 1e-5
    md.update(extra_md or {})
    md.pop(drop_key, None)
    for key, value in md.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    rng = np.random.default_rng(0)
    for name, shape in (_tensors() if tensors is None else tensors).items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return GGUFFile(path)


def test_tiny_model_loads_tied_and_untied(tmp_path):
    for tied in (True, False):
        f = write_tiny(tmp_path / f"t{tied}.gguf", tensors=_tensors(tied))
        cfg = ModelConfig.from_gguf(f)
        assert cfg.tied_embeddings is tied and cfg.rope_base == 10000.0 and cfg.head_dim == 4
        model = load_model(f, cfg)
        head = model.token_embd.weight if tied else model.output.weight
        torch.testing.assert_close(head, f.load("output.weight" if not tied else "token_embd.weight"))
        assert set(model.state_dict()) == set(f.tensors)


def test_unknown_architecture(tmp_path):
    f = write_tiny(tmp_path / "x.gguf", arch="mamba")
    with pytest.raises(GGUFError, match=r"'mamba'.*llama, qwen2, gemma3"):
        ModelConfig.from_gguf(f)


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
                                 "llama.feed_forward_length", "llama.attention.layer_norm_rms_epsilon"])
def test_missing_metadata_names_the_key(tmp_path, key):
    f = write_tiny(tmp_path / "m.gguf", drop_key=key)
    with pytest.raises(GGUFError, match=key.replace(".", r"\.")):
        ModelConfig.from_gguf(f)


def test_vocab_size_falls_back_to_token_list(tmp_path):
    f = write_tiny(tmp_path / "v.gguf", drop_key="llama.vocab_size")
    with pytest.raises(GGUFError, match="vocab_size"):
        ModelConfig.from_gguf(f)
    f.metadata["tokenizer.ggml.tokens"] = [f"t{i}" for i in range(32)]
    assert ModelConfig.from_gguf(f).vocab_size == 32


def test_missing_tensor_is_named(tmp_path):
    t = _tensors()
    del t["blk.0.ffn_up.weight"]
    f = write_tiny(tmp_path / "mt.gguf", tensors=t)
    with pytest.raises(GGUFError, match=r"'blk\.0\.ffn_up\.weight'"):
        load_model(f, ModelConfig.from_gguf(f))


def test_unexpected_tensor_is_named(tmp_path):
    f = write_tiny(tmp_path / "ut.gguf", tensors={**_tensors(), "blk.0.attn_q.bias": (8,)})
    with pytest.raises(GGUFError, match=r"unexpected tensor 'blk\.0\.attn_q\.bias'"):
        load_model(f, ModelConfig.from_gguf(f))


def test_wrong_shape_is_named(tmp_path):
    f = write_tiny(tmp_path / "ws.gguf", tensors={**_tensors(), "blk.0.ffn_gate.weight": (12, 8)})
    with pytest.raises(GGUFError, match=r"'blk\.0\.ffn_gate\.weight' has shape \(12, 8\)"):
        load_model(f, ModelConfig.from_gguf(f))


def test_rope_freqs_tensor_and_scaling_metadata(tmp_path):
    scaling = {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}
    f = write_tiny(tmp_path / "rf.gguf", tensors={**_tensors(), "rope_freqs.weight": (2,)}, extra_md=scaling)
    cfg = ModelConfig.from_gguf(f)
    assert cfg.rope_freq_factors and cfg.rope_scaling == RopeScaling("linear", 4.0, None)
    model = load_model(f, cfg)
    torch.testing.assert_close(model.rope_freqs.weight, f.load("rope_freqs.weight"))
    f = write_tiny(tmp_path / "bad.gguf", extra_md={"llama.rope.scaling.type": "longrope",
                                                    "llama.rope.scaling.factor": 4.0})  # fmt: skip
    with pytest.raises(GGUFError, match="'longrope' is not supported"):
        ModelConfig.from_gguf(f)


def test_yarn_frequencies_match_hf():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for factor, orig in [(4.0, 8192), (32.0, 4096)]:
        params = {"rope_type": "yarn", "rope_theta": 1e6, "factor": factor,
                  "original_max_position_embeddings": orig}
        hf_cfg = LlamaConfig(hidden_size=512, num_attention_heads=4,
                             max_position_embeddings=orig * int(factor), rope_parameters=params)
        inv, attn_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_cfg, "cpu")
        ours = rope_inv_freq(128, 1e6, RopeScaling("yarn", factor, orig))
        torch.testing.assert_close(ours.float(), inv.float(), rtol=1e-6, atol=0)
        assert 0.1 * math.log(factor) + 1 == pytest.approx(attn_factor)
