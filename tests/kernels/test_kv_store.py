"""KV store: a copy, so exact (bit-equal) against the twin and a direct loop; casts round like torch."""

import pytest
import torch

from rocmforge.kernels.kv_store import store_kv
from rocmforge.kernels.reference_ops import store_kv_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("Hkv,D,page", [(2, 64, 16), (3, 48, 5), (8, 128, 1), (1, 256, 32)])
@pytest.mark.parametrize("src,dst", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float16)])
def test_store_matches_twin_and_loop(Hkv, D, page, src, dst):
    g = torch.Generator().manual_seed(Hkv * D)
    T = 11
    nb = T // page + 3
    k = torch.randn(T, Hkv, D, generator=g).to(src).to(DEV)
    v = torch.randn(T, Hkv, D, generator=g).to(src).to(DEV)
    slots = torch.randperm(nb * page, generator=g)[:T]
    slots[[1, 6]] = -1  # padding tokens
    slots = slots.to(DEV)
    kc = torch.full((nb, page, Hkv, D), 7.0, dtype=dst, device=DEV)  # poison: untouched slots keep it
    vc = kc.clone()
    store_kv(k, v, kc, vc, slots)
    kr, vr = kc.clone().fill_(7.0), vc.clone().fill_(7.0)
    store_kv_ref(k, v, kr, vr, slots)
    assert torch.equal(kc, kr) and torch.equal(vc, vr)
    kl = torch.full_like(kc, 7.0)
    for t, s in enumerate(slots.tolist()):  # direct loop, independent of the twin's indexing
        if s >= 0:
            kl[s // page, s % page] = k[t].to(dst)
    assert torch.equal(kc, kl)


def test_strided_inputs_from_a_fused_qkv():
    qkv = torch.randn(5, 4 + 2 + 2, 32, device=DEV)  # (T, Hq + 2 Hkv, D) like a fused projection
    k, v = qkv[:, 4:6], qkv[:, 6:8]
    kc = torch.zeros(2, 4, 2, 32, device=DEV)
    vc = torch.zeros_like(kc)
    slots = torch.tensor([0, 3, 4, 7, -1], device=DEV)
    store_kv(k, v, kc, vc, slots)
    assert torch.equal(kc.view(-1, 2, 32)[slots[:4]], k[:4])
    assert torch.equal(vc.view(-1, 2, 32)[slots[:4]], v[:4])
    assert kc.view(-1, 2, 32)[[1, 2, 5, 6]].abs().sum() == 0
