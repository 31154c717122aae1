"""RoPE: the twin against direct float64 formulas (HF's rotate_half for NeoX, complex multiplication
for the interleaved layout), the frequency table against HF transformers' rope init functions and the
llama3 / YaRN formulas written out, and the kernel against the twin. The kernel and twin apply the
same fp32 rotation to the same table and round once: fp32 to 1e-6, bf16 to one ulp (2^-7 relative; the
interpreter rounds toward zero)."""

import math

import pytest
import torch

from rocmforge.kernels.reference_ops import apply_rope_ref
from rocmforge.kernels.rope import RopeScaling, apply_rope, rope_cos_sin_cache, rope_inv_freq

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(T, Hq, Hkv, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, Hq, D, generator=g).to(dtype)
    k = torch.randn(T, Hkv, D, generator=g).to(dtype)
    pos = torch.randint(0, 200, (T,), generator=g)
    return q, k, pos


def test_neox_twin_matches_hf_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k, pos = _inputs(5, 4, 2, 32, torch.float64)
    f = 10000.0 ** (-torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    ang = pos[:, None].double() * f  # (T, 16)
    emb = torch.cat([ang, ang], -1)  # HF: cos/sin repeated over both halves
    qh, kh = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                  emb.cos()[None], emb.sin()[None])
    full = torch.arange(200, dtype=torch.float64)[:, None] * f
    cache = torch.cat([full.cos(), full.sin()], -1)
    qr, kr = apply_rope_ref(q, k, pos, cache, neox=True)
    torch.testing.assert_close(qr.double(), qh[0].transpose(0, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(kr.double(), kh[0].transpose(0, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rot_dim", [32, 16])  # 16: partial rotary, dims 16.. untouched
def test_interleaved_twin_matches_complex_rotation(rot_dim):
    q, k, pos = _inputs(5, 3, 1, 32, torch.float64)
    cache = rope_cos_sin_cache(rot_dim, 200, 500.0).double()
    qr, _ = apply_rope_ref(q, k, pos, cache, neox=False)
    f = 500.0 ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    rot = torch.polar(torch.ones(5, rot_dim // 2, dtype=torch.float64), pos[:, None].double() * f)
    z = torch.view_as_complex(q[..., :rot_dim].reshape(5, 3, rot_dim // 2, 2).contiguous()) * rot[:, None]
    direct = torch.cat([torch.view_as_real(z).flatten(-2), q[..., rot_dim:]], -1)
    torch.testing.assert_close(qr.double(), direct, rtol=1e-6, atol=1e-6)  # the table is fp32


def _hf_inv_freq(kind, params, head_dim=64, max_pos=32768):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                      max_position_embeddings=max_pos, rope_parameters=dict(rope_type=kind, **params))
    return ROPE_INIT_FUNCTIONS[kind](cfg, "cpu")


@pytest.mark.parametrize("scaling,params", [
    (RopeScaling("linear", 4.0), dict(rope_theta=10000.0, factor=4.0)),
    (RopeScaling("llama3", 8.0, 8192, 1.0, 4.0),
     dict(rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
          original_max_position_embeddings=8192)),
    (RopeScaling("yarn", 4.0, 4096), dict(rope_theta=1e6, factor=4.0, original_max_position_embeddings=4096)),
])
def test_scaled_frequencies_match_hf(scaling, params):
    f, mscale = rope_inv_freq(64, params["rope_theta"], scaling)
    f_hf, m_hf = _hf_inv_freq(scaling.kind, params)
    torch.testing.assert_close(f.float(), f_hf.float(), rtol=2e-6, atol=0)
    assert math.isclose(mscale, m_hf, rel_tol=1e-9)


def test_yarn_and_llama3_by_hand():
    f0 = 10000.0 ** (-torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    f, m = rope_inv_freq(128, 10000.0, RopeScaling("yarn", 16.0, 2048, beta_fast=32, beta_slow=1))
    turns = 2048 * f0 / (2 * math.pi)  # rotations over the original context
    assert torch.allclose(f[turns > 32 * 1.2], f0[turns > 32 * 1.2])  # fast dims: untouched
    assert torch.allclose(f[turns < 0.8], f0[turns < 0.8] / 16)  # slow dims: fully interpolated
    assert math.isclose(m, 0.1 * math.log(16) + 1)
    f, _ = rope_inv_freq(128, 10000.0, RopeScaling("llama3", 8.0, 4096, 1.0, 4.0))
    wl = 2 * math.pi / f0
    assert torch.equal(f[wl < 1024], f0[wl < 1024]) and torch.allclose(f[wl > 4096], f0[wl > 4096] / 8)


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("Hq,Hkv,D,rot_dim", [(4, 2, 64, 64), (7, 1, 128, 64), (3, 3, 256, 256),
                                              (2, 1, 80, 80)])
def test_kernel_matches_twin(neox, dtype, Hq, Hkv, D, rot_dim):
    q, k, pos = _inputs(9, Hq, Hkv, D, dtype, seed=D)
    cache = rope_cos_sin_cache(rot_dim, 256, 10000.0, RopeScaling("yarn", 4.0, 64), device=DEV)
    q, k, pos = q.to(DEV), k.to(DEV), pos.to(DEV)
    qr, kr = apply_rope_ref(q, k, pos, cache, neox=neox)
    qk, kk = apply_rope(q.clone(), k.clone(), pos, cache, neox=neox)
    tol = 1e-6 if dtype == torch.float32 else 8e-3
    torch.testing.assert_close(qk.float(), qr.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(kk.float(), kr.float(), rtol=tol, atol=tol)
    assert torch.equal(qk[..., rot_dim:], q[..., rot_dim:])
