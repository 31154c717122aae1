"""Synthetic GGUF files for the bench tests, written once per session into a temporary cache folder.

    smollm2_l2   smollm2-135m-q4_1 truncated to 2 layers (Q4_1 matrices, Q8_0 tied head), via the cache
    tiny_kquant  a Llama-3-8B Q4_K_M spec shrunk to small widths and 3 layers (Q4_K + Q6_K), so the
                 random K-quant blocks are exercised in seconds
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rocmforge.bench.specs import SPECS
from rocmforge.bench.synthetic import ensure_synthetic, write_synthetic

torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))

TINY_KQUANT = dataclasses.replace(SPECS["llama-3-8b-q4_k_m"], num_layers=3, hidden_size=512, ffn_size=768,
                                  vocab_size=1024, num_heads=4, num_kv_heads=2)  # fmt: skip


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def smollm2_l2(synth_dir):
    return ensure_synthetic("smollm2-135m-q4_1", layers=2, cache_dir=synth_dir)


@pytest.fixture(scope="session")
def tiny_kquant_spec():
    return TINY_KQUANT


@pytest.fixture(scope="session")
def tiny_kquant(synth_dir):
    return write_synthetic(TINY_KQUANT, synth_dir / "tiny-kquant.gguf")
