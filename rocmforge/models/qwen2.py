"""Qwen2 / Qwen2.5: the llama block with biases on the Q, K and V projections, NeoX RoPE."""

from __future__ import annotations

from .base import CausalLM, DecoderLayer


class Qwen2DecoderLayer(DecoderLayer):
    QKV_BIAS = True  # blk.{i}.attn_q.bias, attn_k.bias, attn_v.bias


class Qwen2ForCausalLM(CausalLM):
    layer_cls = Qwen2DecoderLayer
