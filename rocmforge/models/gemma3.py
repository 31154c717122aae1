"""Gemma 3 (text): the llama block plus QK-norm, post-norms and a GELU-tanh gated FFN.

    per layer:  h = h + post_attention_norm(Attn(...(attn_norm(h))))    q, k RMS-normed per head
                h = h + post_ffw_norm(ffn_down(gelu_tanh(ffn_gate(n)) * ffn_up(n))),  n = ffn_norm(h)

The rest is configuration (ModelConfig): embeddings scaled by sqrt(hidden), 5 sliding-window layers
(RoPE base 1e4) then 1 global layer (RoPE base = rope.freq_base), NeoX RoPE. Gemma's HF norms are
x * (1 + w); the GGUF already stores 1 + w, so RMSNorm uses the stored weight as is.
"""

from __future__ import annotations

import torch

from ..attention.base import AttentionBackend
from ..config import ModelConfig
from ..layers.norm import RMSNorm
from .base import CausalLM, DecoderLayer


class Gemma3DecoderLayer(DecoderLayer):
    def __init__(self, config: ModelConfig, layer_idx: int, backend: AttentionBackend):
        super().__init__(config, layer_idx, backend)
        c = config
        self.attn_q_norm = RMSNorm(c.head_dim, c.rms_eps)
        self.attn_k_norm = RMSNorm(c.head_dim, c.rms_eps)
        self.post_attention_norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.post_ffw_norm = RMSNorm(c.hidden_size, c.rms_eps)

    def qk_norm(self, q: torch.Tensor, k: torch.Tensor):  # (T, Hq, D), (T, Hkv, D), normed over D
        return self.attn_q_norm(q), self.attn_k_norm(k)

    GELU = True

    def forward(self, h, rope, cos_sin, meta, residual=None):  # the stream is h + residual, as in the base
        x, residual = self.attn_norm.add(h, residual)
        h = self.post_attention_norm(self.attention(x, rope, cos_sin, meta))
        x, residual = self.ffn_norm.add(h, residual)
        return self.post_ffw_norm(self.ffn(x)), residual


class Gemma3ForCausalLM(CausalLM):
    layer_cls = Gemma3DecoderLayer
