"""Llama (and SmolLM2, Mistral-style files with general.architecture = llama).

Plain pre-norm decoder with SiLU-gated FFN. RoPE uses the normal (adjacent-pair) layout because
llama.cpp's converter permutes the Q/K rows at conversion; that choice lives in ModelConfig.
"""

from __future__ import annotations

from .base import CausalLM, DecoderLayer


class LlamaForCausalLM(CausalLM):
    layer_cls = DecoderLayer
